"""LLaMA-Factory's pairwise rule (src/llamafactory/data/processor/pairwise.py,
PairwiseDatasetProcessor._encode_data_example, with infer_seqlen from processor_utils.py),
rendered on token ids so that it runs without transformers: prompt_ids are what encode_oneturn
gives for the prompt (every earlier turn and the last user turn with the assistant header),
chosen_ids / rejected_ids the answer turns.

stdin: {"cases": [{"prompt": [ids], "chosen": [ids], "rejected": [ids], "cutoff_len": n}, ...]}
stdout: {"results": [{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}, ...]}
"""
import json
import sys

IGNORE_INDEX = -100


def infer_seqlen(source_len, target_len, cutoff_len):
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    max_source_len = max(cutoff_len - new_target_len, 0)
    new_source_len = min(max_source_len, source_len)
    return new_source_len, new_target_len


def encode(case):
    prompt_ids, chosen_ids, rejected_ids = case["prompt"], case["chosen"], case["rejected"]
    source_len, target_len = infer_seqlen(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), case["cutoff_len"])
    prompt_ids = prompt_ids[:source_len]
    chosen_ids = chosen_ids[:target_len]
    rejected_ids = rejected_ids[:target_len]
    return {
        "chosen_input_ids": prompt_ids + chosen_ids,
        "chosen_labels": [IGNORE_INDEX] * source_len + chosen_ids,
        "rejected_input_ids": prompt_ids + rejected_ids,
        "rejected_labels": [IGNORE_INDEX] * source_len + rejected_ids,
    }


def main():
    a = json.load(sys.stdin)
    json.dump({"results": [encode(c) for c in a["cases"]]}, sys.stdout)


if __name__ == "__main__":
    main()
