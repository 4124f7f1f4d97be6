import json

from fertool.evaluate.report import MethodResult, markdown_table, write_report


def test_report_schema_and_table(tmp_path):
    results = [
        MethodResult("lpq", accuracy_mean=0.383, accuracy_std=0.012, macro_f1=0.37,
                     per_class_recall={"angry": 0.5, "happy": 0.75}, n_folds=3),
        MethodResult("facenet-vggface2", status="unavailable", reason="weights not cached"),
    ]
    md, js = write_report(tmp_path, title="t", protocol="paper", split_hash="abc",
                          results=results, meta={"seeds": [0, 1, 2], "versions": {"numpy": "2"}})
    data = json.loads(js.read_text())
    assert data["protocol"] == "paper" and data["split_hash"] == "abc"
    assert [r["method"] for r in data["results"]] == ["lpq", "facenet-vggface2"]
    for key in ("accuracy_mean", "accuracy_std", "macro_f1"):
        assert key in data["results"][0]
    assert data["results"][1]["reason"] == "weights not cached"
    text = md.read_text()
    assert "| lpq | 38.3 | 1.2 (3) | 37.0 |" in text and "not run: weights not cached" in text
    assert "| lpq |" in markdown_table(results)
