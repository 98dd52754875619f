"""Data for LatentWire: synthetic tasks with held-out splits, and loaders for GSM8K, SQuAD, HotpotQA.

Everything becomes an `Example` (example.py). The synthetic tasks (synthetic.py: relay-QA;
arithmetic.py: word problems) are generated deterministically from their arguments, and their
validation/test splits use names, answer values and sentence templates never seen in training
(pools.py, templates.py), so a score on test measures information carried, not labels memorised.
The loaders (loaders.py) read the original release formats, the Hugging Face column layout, or the
hub, and raise DatasetFormatError naming the file, record and field for anything malformed.
`load_task` (tasks.py) maps a task name to one of these; for the trainer's `--data` /
`--eval-data`, `load_dataset_split` holds validation and test out of a training file or takes them
from an evaluation source, disjoint from training by construction (loaders.py, "Splits for training").
"""

from .arithmetic import arithmetic
from .example import SPLITS, DatasetFormatError, Example
from .loaders import check_source, load_dataset_split, load_gsm8k, load_hotpotqa, load_squad, same_file
from .synthetic import KINDS, relay_qa
from .tasks import DATASET_TASKS, data_keywords, load_task

__all__ = ["Example", "DatasetFormatError", "SPLITS", "KINDS", "relay_qa", "arithmetic",
           "load_gsm8k", "load_squad", "load_hotpotqa", "load_task", "DATASET_TASKS", "data_keywords",
           "load_dataset_split", "check_source", "same_file"]
