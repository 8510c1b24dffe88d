"""The pretrained ("original") checkpoint a run starts from: read once as saved, its model
sizes, and whether it fits the prepared data."""

import os

from ..errors import CheckpointError

# the model settings a stage must build with to load the checkpoint (as saved in it)
CARRIED = ("max_positions", "activation_fn", "layer_norm_eps")
DIMS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
        "encoder_attention_heads")


def read_original(path):
    """The pretrained checkpoint as saved (not fairseq's upgraded view of it), read once:
    its sizes, its vocabulary and the stage starts all come from this one read."""
    from ..peft.checkpoints import read_saved

    return read_saved(path, "--checkpoint %s")


def model_args(state):
    """Model sizes and arch from `args` (older checkpoints) or `cfg.model` (a Namespace, or a
    plain dict in exported checkpoints)."""
    args = state.get("args") or state["cfg"]["model"]
    values = args if isinstance(args, dict) else vars(args)
    dims = {k: values[k] for k in DIMS}
    dims["arch"] = values.get("arch") or values.get("_name")  # hydra's configs: _name
    dims.update({k: values[k] for k in CARRIED if values.get(k) is not None})
    return dims


def check_fits_data(state, data, path):
    """The checkpoint's vocabulary must be the data's dictionary (plus <mask>)."""
    from ..data.tokenisers import dictionary_size

    entries = dictionary_size(os.path.join(data, "input0", "dict.txt"))
    # 2019 releases name the encoder "decoder.sentence_encoder"; fairseq renames it on load
    [rows] = [v.shape[0] for k, v in state["model"].items()
              if k.endswith(".sentence_encoder.embed_tokens.weight")]
    if rows != entries:
        raise CheckpointError(
            "--checkpoint %s has %d token embeddings but the dictionary of %s has %d entries: "
            "the data was prepared with another dictionary (ehft prepare --srcdict)"
            % (path, rows, data, entries))
