"""pipelines/report.py: the paper-shaped comparison tables."""
from __future__ import annotations

from pipelines.report import comparison_tables, table_cells


def _row(corpus: str, run: str, table: list[str], metrics: dict[str, float]) -> dict:
    return {"corpus": corpus, "run": run, "method": "m", "fields": ["a"], "tables": table_cells(table),
            "baseline": None,
            "metrics": metrics, "scores": {}}


def test_cells_are_mean_std_and_absent_metrics_get_no_column():
    rows = {"crema_d.fused": _row("crema_d", "fused", ["T3", "CREMA-D", "late fusion"],
                                  {"accuracy": 0.5, "accuracy_std": 0.1}),
            "crema_d.cmvqvae": _row("crema_d", "cmvqvae", ["T3", "CREMA-D", "CM-VQVAE"],
                                    {"accuracy": 0.6, "accuracy_std": 0.0, "zeta": 0.25, "zeta_std": 0.05})}
    lines = comparison_tables(rows)
    # a 6-class corpus has no binary AUROC: no empty column; CM-VQVAE's zeta is shown beside accuracy
    assert lines[0] == "### crema_d: T3 (accuracy / zeta, mean ± std over seeds)"
    assert lines[2] == "| | late fusion | CM-VQVAE |"
    assert lines[4] == "| CREMA-D | 0.5000 ± 0.1000 /  | 0.6000 / 0.2500 ± 0.0500 |"


def test_one_table_per_corpus_and_name_with_rows_and_columns_in_params_order():
    rows = {f"mosi.{r}": _row("mosi", r, ["MDM", "simple", c], {"acc7": v, "non0_acc2": v})
            for r, c, v in (("none", "L_empty", 0.1), ("w", "L_W", 0.2), ("kl", "L_kl", 0.3))}
    rows["mosei.none"] = _row("mosei", "none", ["MDM", "simple", "L_empty"], {"acc7": 0.4, "non0_acc2": 0.4})
    rows["mosei.w"] = _row("mosei", "w", ["MDM", "simple", "L_W"], {"acc7": 0.4, "non0_acc2": 0.4})
    lines = comparison_tables(rows)
    assert [line for line in lines if line.startswith("###")] == [
        "### mosei: MDM (acc7 / non0_acc2, mean ± std over seeds)",
        "### mosi: MDM (acc7 / non0_acc2, mean ± std over seeds)"]
    assert "| | L_empty | L_W | L_kl |" in lines
    assert "| simple | 0.1000 / 0.1000 | 0.2000 / 0.2000 | 0.3000 / 0.3000 |" in lines


def test_a_run_fills_a_cell_of_each_table_it_names_and_one_column_tables_are_left_out():
    cells = [["ProFusion Table 8", "LF", "base"], ["MDM slides", "simple fusion", "L_empty"],
             ["TupleInfoNCE Table 3", "MOSI", "scratch"]]
    rows = {"mosi.lf": _row("mosi", "lf", cells, {"acc7": 0.5, "non0_acc2": 0.8}),
            "mosi.lf_profusion": _row("mosi", "lf_profusion", ["ProFusion Table 8", "LF", "ProFusion"],
                                      {"acc7": 0.7, "non0_acc2": 0.7}),
            "mosi.mdm_w": _row("mosi", "mdm_w", ["MDM slides", "simple fusion", "L_W"], {"acc7": 0.6, "non0_acc2": 0.9})}
    lines = comparison_tables(rows)
    assert "| | L_empty | L_W |" in lines and "| simple fusion | 0.5000 / 0.8000 | 0.6000 / 0.9000 |" in lines
    assert "| | base | ProFusion |" in lines and "| LF | 0.5000 / 0.8000 | 0.7000 / 0.7000 |" in lines
    assert not any("TupleInfoNCE" in line for line in lines), "a table with one column compares nothing"
    assert table_cells(None) == [] and table_cells(["T", "r", "c"]) == [("T", "r", "c")]
