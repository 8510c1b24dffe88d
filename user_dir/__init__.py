"""A worked example of your own plugin built on ehft_plugin.

It adds one task, `movie-sentiment`: your own TSV files with a header
`id<TAB>review<TAB>sentiment` and your own label set (negative, positive).
Everything else - binarising, the glue_ehft task, the criterion, the metrics,
prediction - comes from ehft_plugin:

    ehft prepare movie-sentiment --user-dir user_dir --raw-dir my_reviews/ \
        --out-dir data-bin/reviews --bpe gpt2 --gpt2-encoder-json encoder.json \
        --gpt2-vocab-bpe vocab.bpe --srcdict dict.txt
    fairseq-train data-bin/reviews --user-dir user_dir --task glue_ehft \
        --criterion sentence_prediction_ehft --arch roberta_base ...
    ehft predict --user-dir user_dir --checkpoint checkpoints/checkpoint_best.pt \
        --input my_reviews/test.tsv --out predictions.tsv

Copy this directory, rename it, and edit the TaskSpec below.
"""

import ehft_plugin  # noqa: F401  registers --task glue_ehft and the criterion
from ehft_plugin.data.task_table import TaskSpec, register_task_spec

register_task_spec(
    TaskSpec(
        name="movie-sentiment",
        benchmark="custom",
        raw_format="tsv",
        splits={"train": "train.tsv", "valid": "dev.tsv"},
        text_fields=("review",),
        label_field="sentiment",
        labels=("negative", "positive"),  # class ids 0 and 1, fixed
        metrics=("accuracy", "f1"),  # F1 of the second label, "positive"
        id_field="id",
        notes="one review per row; labels spelled out",
    )
)
