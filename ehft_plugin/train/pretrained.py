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
    from ..fairseq_compat.safe_loading import safe_load

    if not os.path.isfile(path):
        raise CheckpointError("--checkpoint %s: file not found" % path)
    try:
        return safe_load(path, map_location="cpu")
    except CheckpointError:
        raise
    except Exception as e:  # a truncated file fails inside torch's zip reader
        raise CheckpointError("--checkpoint %s: cannot be read (%s)" % (path, e)) from None


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
    from ..data.tokenisers import load_dictionary

    dictionary = load_dictionary(os.path.join(data, "input0", "dict.txt"))
    # 2019 releases name the encoder "decoder.sentence_encoder"; fairseq renames it on load
    [rows] = [v.shape[0] for k, v in state["model"].items()
              if k.endswith(".sentence_encoder.embed_tokens.weight")]
    if rows != len(dictionary):
        raise CheckpointError(
            "--checkpoint %s has %d token embeddings but the dictionary of %s has %d entries: "
            "the data was prepared with another dictionary (ehft prepare --srcdict)"
            % (path, rows, data, len(dictionary)))
