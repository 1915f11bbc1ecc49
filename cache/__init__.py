"""The HDF5 embedding cache: format (schema), writer, validating reader, CoOp few-shot sampling, synthetic caches.

Import the submodules you need (cache.reader pulls in torch; cache.fewshot does not)."""
