"""extract.prompts: per-dataset template sets, CuPL matching, user templates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.prompts import SELECT_TEMPLATES, build_prompt_sets, ensemble_templates, parse_cupl_options


def test_ensemble_has_no_coop_template_for_imagenet():
    assert ensemble_templates("imagenet") == list(SELECT_TEMPLATES)


@pytest.mark.parametrize("dataset,template", [("dtd", "{} texture."), ("eurosat", "a centered satellite photo of {}."),
                                              ("oxford_flowers", "a photo of a {}, a type of flower.")])
def test_ensemble_has_no_select_templates_for_dtd_eurosat_flowers(dataset, template):
    assert ensemble_templates(dataset) == [template]


def test_ensemble_is_coop_plus_seven_select_templates_elsewhere():
    assert ensemble_templates("food101") == ["a photo of {}, a type of food.", *SELECT_TEMPLATES]
    assert ensemble_templates("caltech101")[0] == "a photo of a {}."
    assert len(ensemble_templates("caltech101")) == 8


def test_prompt_sets_keep_every_prompt_class_major():
    sets = build_prompt_sets(["classname", "coop", "ensemble"], "ucf101", ["Apply Eye Makeup", "Archery"])
    by_name = {s.name: s for s in sets}
    assert by_name["classname"].prompts == ["Apply Eye Makeup", "Archery"]
    assert by_name["coop"].prompts == ["a photo of a person doing Apply Eye Makeup.", "a photo of a person doing Archery."]
    assert by_name["ensemble"].classes == [0] * 8 + [1] * 8


def test_cupl_keys_match_case_insensitively_with_underscores_as_spaces(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"Sea_or_Lake": ["blue water.", "waves."], "forest": ["trees."]}))
    (cupl,) = build_prompt_sets(["cupl"], "eurosat", ["forest", "sea or lake"], cupl=path)
    assert cupl.prompts == ["trees.", "blue water.", "waves."] and cupl.classes == [0, 1, 1]
    assert cupl.attrs["file"] == "c.json" and len(cupl.attrs["sha256"]) == 64


def test_cupl_file_missing_a_class_names_the_class(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"forest": ["trees."]}))
    with pytest.raises(ClipBridgeError, match="no sentences for class 'river'"):
        build_prompt_sets(["cupl"], "eurosat", ["forest", "river"], cupl=path)


@pytest.mark.parametrize("name,split", [("dtd", "DescribableTextures"), ("eurosat", "EuroSAT")])
def test_real_cupl_files_cover_every_class_of_the_real_split(shared_dir, name, split):
    from clipbridge.extract.datasets.splitfiles import classnames_from_entries, read_coop_split_file
    from clipbridge.extract.datasets.registry import clean_classname

    split_path = shared_dir / "data" / "coop" / f"split_zhou_{split}.json"
    classnames = [clean_classname(c) for c in classnames_from_entries(read_coop_split_file(split_path), split_path)]
    (cupl,) = build_prompt_sets(["cupl"], name, classnames, cupl=shared_dir / "data" / "cupl" / f"{name}.json")
    assert set(cupl.classes) == set(range(len(classnames)))
    assert len(cupl.prompts) > len(classnames)


def test_user_templates_file_one_per_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# mine\na drawing of a {}.\n\n{} in the wild.\n")
    (templates,) = build_prompt_sets(["templates"], "dtd", ["cat"], templates=path)
    assert templates.prompts == ["a drawing of a cat.", "cat in the wild."]
    path.write_text("no placeholder\n")
    with pytest.raises(ClipBridgeError, match="exactly one"):
        build_prompt_sets(["templates"], "dtd", ["cat"], templates=path)


def test_unknown_set_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ClipBridgeError, match="unknown prompt set 'fancy'"):
        build_prompt_sets(["fancy"], "dtd", ["cat"])
    with pytest.raises(ClipBridgeError, match="needs --cupl"):
        build_prompt_sets(["cupl"], "dtd", ["cat"])
    with pytest.raises(ClipBridgeError, match="CuPL file not found: .*absent.json"):
        build_prompt_sets(["cupl"], "dtd", ["cat"], cupl=tmp_path / "absent.json")


def test_cupl_option_names_each_set_and_a_bare_file_is_the_unnamed_set(tmp_path):
    files = parse_cupl_options(["ape=a.json", "semobridge=/x/s=1.json", "/data/old=cupl.json"])
    assert files == {"cupl:ape": Path("a.json"), "cupl:semobridge": Path("/x/s=1.json"),
                     "cupl": Path("/data/old=cupl.json")}
    with pytest.raises(ClipBridgeError, match="gives set 'cupl:ape' twice"):
        parse_cupl_options(["ape=a.json", "ape=b.json"])
    with pytest.raises(ClipBridgeError, match="NAME in NAME=FILE takes letters"):
        parse_cupl_options(["my set=a.json"])


def test_two_named_cupl_files_are_two_text_sets_and_cupl_stands_for_all_of_them(tmp_path):
    ape, semo = tmp_path / "ape.json", tmp_path / "semo.json"
    ape.write_text(json.dumps({"forest": ["APE trees."]}))
    semo.write_text(json.dumps({"forest": ["SeMo trees.", "SeMo leaves."]}))
    files = parse_cupl_options([f"ape={ape}", f"semobridge={semo}"])
    every = build_prompt_sets(["coop", "cupl"], "eurosat", ["forest"], cupl=files)
    assert [(s.name, s.prompts) for s in every[1:]] == [("cupl:ape", ["APE trees."]),
                                                        ("cupl:semobridge", ["SeMo trees.", "SeMo leaves."])]
    (one,) = build_prompt_sets(["cupl:semobridge"], "eurosat", ["forest"], cupl=files)
    assert one.name == "cupl:semobridge" and one.attrs["file"] == "semo.json"
    with pytest.raises(ClipBridgeError, match=r"prompt set 'cupl:other' needs --cupl other=FILE \(given: cupl:ape"):
        build_prompt_sets(["cupl:other"], "eurosat", ["forest"], cupl=files)
