"""A fairness arm's shipping rule, read from a fairness table (benchmarks/fairness_table.py):
on validation, against the table's first arm (the baseline), accuracy and malignant AUC each
≥ its − 0.01, balanced accuracy ≥ its − 0.02, malignant sensitivity (P(malignant) ≥ 0.5)
≥ its − 0.02 and flips to darker skin ≥ 1 point under its; optionally flips to darker skin
≤ --flip-bar and the change of malignant AUC under the darker re-tint ≥ --auc-change-bar.
Prints every check and, last, one JSON line naming the arm with the fewest flips to darker
skin among those that meet them all (null: none).

--whole-field: the robustness rule instead (session 27) — the same four quality checks; flips
to darker skin (skin-only) ≤ base + 0.5 point (not worse); flips to darker skin over the whole
field (the lesion darkened with its skin) ≥ 3 points under base's, and the change of malignant
AUC under it ≥ base's + 0.02. Among those passing, the fewest whole-field flips."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def overall(arm: dict, key: str) -> float:
    return arm["val"]["ci"]["overall"][key]["value"]


def checks(arm: dict, base: dict, flip_bar: float | None,
           auc_change_bar: float | None, whole_field: bool = False) -> dict[str, bool]:
    out = {
        "accuracy ≥ base − 0.01": overall(arm, "accuracy") >= overall(base, "accuracy") - 0.01,
        "malignant AUC ≥ base − 0.01":
            overall(arm, "malignant_auc") >= overall(base, "malignant_auc") - 0.01,
        "balanced accuracy ≥ base − 0.02":
            overall(arm, "balanced_accuracy") >= overall(base, "balanced_accuracy") - 0.02,
        "malignant sensitivity ≥ base − 0.02":
            overall(arm, "sensitivity") >= overall(base, "sensitivity") - 0.02,
    }
    if whole_field:
        field, base_field = arm["val"], base["val"]
        out.update({
            "flips → darker not above base + 0.5 point":
                field["flip_rate_darker"] <= base_field["flip_rate_darker"] + 0.005,
            "whole-field flips → darker ≥ 3 points under base":
                field["flip_rate_darker_whole_field"]
                <= base_field["flip_rate_darker_whole_field"] - 0.03,
            "malignant AUC change under whole-field darker ≥ base's + 0.02":
                field["malignant_auc_change_darker_whole_field"]
                >= base_field["malignant_auc_change_darker_whole_field"] + 0.02,
        })
        return out
    out["flips → darker ≥ 1 point under base"] = (
        arm["val"]["flip_rate_darker"] <= base["val"]["flip_rate_darker"] - 0.01)
    if flip_bar is not None:
        out[f"flips → darker ≤ {flip_bar:.0%}"] = arm["val"]["flip_rate_darker"] <= flip_bar
    if auc_change_bar is not None:
        out[f"malignant AUC change under darker ≥ {auc_change_bar}"] = (
            arm["val"]["malignant_auc_change_darker"] >= auc_change_bar)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("table", type=Path)
    parser.add_argument("--flip-bar", type=float)
    parser.add_argument("--auc-change-bar", type=float)
    parser.add_argument("--whole-field", action="store_true",
                        help="the robustness rule (see above) instead of the flips rule")
    args = parser.parse_args()
    arms = json.loads(args.table.read_text())["arms"]
    (base_name, base), *others = arms.items()
    passing = []
    for name, arm in arms.items():
        print(f"{name}: val accuracy {overall(arm, 'accuracy'):.3f}, "
              f"balanced {overall(arm, 'balanced_accuracy'):.3f}, "
              f"malignant AUC {overall(arm, 'malignant_auc'):.3f}, "
              f"sensitivity {overall(arm, 'sensitivity'):.3f}, "
              f"flips → darker {arm['val']['flip_rate_darker']:.3f}, "
              f"AUC change darker {arm['val']['malignant_auc_change_darker']:+.3f}"
              + (f", whole field: flips {arm['val']['flip_rate_darker_whole_field']:.3f}, AUC "
                 f"change {arm['val']['malignant_auc_change_darker_whole_field']:+.3f}"
                 if "flip_rate_darker_whole_field" in arm["val"] else ""))
    for name, arm in others:
        result = checks(arm, base, args.flip_bar, args.auc_change_bar, args.whole_field)
        print(name)
        for check, ok in result.items():
            print(f"  {'met' if ok else 'MISSED'}: {check}")
        if all(result.values()):
            key = "flip_rate_darker_whole_field" if args.whole_field else "flip_rate_darker"
            passing.append((arm["val"][key], name))
    print(json.dumps({"ship": min(passing)[1] if passing else None}, ensure_ascii=False))


if __name__ == "__main__":
    main()
