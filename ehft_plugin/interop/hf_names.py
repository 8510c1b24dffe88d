"""Names shared by the HF <-> fairseq conversions (convert.py in, hf_export.py out)."""

FAIRSEQ_SPECIALS = ("[CLS]", "[PAD]", "[SEP]", "[UNK]")  # <s> <pad> </s> <unk>
LAYER_MAP = {
    "attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
    "output.dense": "fc2", "output.LayerNorm": "final_layer_norm",
}
