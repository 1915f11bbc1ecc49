"""What results become: records (results.jsonl), tables (mean ± std), plots, published (the papers'
accuracies, published.csv), files (atomic writes)."""
