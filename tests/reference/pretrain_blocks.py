"""LLaMA-Factory's pre-training rule (src/llamafactory/data/processor/pretrain.py,
PretrainDatasetProcessor.preprocess_dataset), rendered on token ids so that it runs without
transformers: each document's ids are what the tokenizer gives for `text + eos_token` with
add_special_tokens=False, i.e. the text's ids followed by the eos id.

stdin: {"docs": [[ids...], ...], "eos": id, "bos": id|null, "add_bos": bool, "cutoff_len": n, "packing": bool}
stdout: {"input_ids": [[...], ...]}
"""
import json
import sys
from itertools import chain


def main():
    a = json.load(sys.stdin)
    examples = [doc + [a["eos"]] for doc in a["docs"]]
    block_size = a["cutoff_len"]
    if not a["packing"]:
        if a["add_bos"]:
            examples = [[a["bos"]] + ex for ex in examples]
        result = [ex[:block_size] for ex in examples]
    else:
        concatenated = list(chain(*examples))
        total_length = (len(concatenated) // block_size) * block_size
        result = [concatenated[i : i + block_size] for i in range(0, total_length, block_size)]
        if a["add_bos"]:
            for block in result:
                block[0] = a["bos"]
    json.dump({"input_ids": result}, sys.stdout)


if __name__ == "__main__":
    main()
