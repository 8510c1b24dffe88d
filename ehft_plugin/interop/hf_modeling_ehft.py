"""transformers classes for the EH-FT head, copied as `modeling_ehft.py` into the folders
`ehft export-hf` writes for a model trained with `--head-type ehft`, and loaded from there
with `trust_remote_code=True`.

transformers' sequence-classification heads are hidden -> hidden with tanh (RoBERTa's
`classifier`, BERT's `pooler`); the EH-FT head is hidden -> inner (2048) -> classes with
ReLU, on the first token's hidden state, dropout before each linear layer. These classes are
transformers' own RoBERTa and BERT classifiers with that head put in place of theirs; the
encoders are untouched. This file imports only torch and transformers: it must load where
neither fairseq nor ehft_plugin is installed.
"""

import torch
from torch import nn
from transformers import (BertConfig, BertForSequenceClassification, RobertaConfig,
                          RobertaForSequenceClassification)


class EhftClassificationHead(nn.Module):
    """first token -> dropout -> dense (hidden -> inner) -> activation -> dropout ->
    out_proj (inner -> labels), as fairseq's RobertaClassificationHead computes it."""

    def __init__(self, config):
        super().__init__()
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(config.hidden_size, config.ehft_head_inner_dim)
        self.activation = {"relu": torch.relu, "tanh": torch.tanh,
                           "gelu": nn.functional.gelu}[config.ehft_head_activation]
        self.out_proj = nn.Linear(config.ehft_head_inner_dim, config.num_labels)

    def forward(self, features, **kwargs):
        x = features[:, 0, :] if features.dim() == 3 else features
        x = self.dense(self.dropout(x))
        return self.out_proj(self.dropout(self.activation(x)))


class _FirstToken(nn.Module):
    """In place of BERT's pooler: the first token's hidden state as it is (the EH-FT head
    has its own dense layer)."""

    def forward(self, hidden_states):
        return hidden_states[:, 0]


class EhftRobertaConfig(RobertaConfig):
    model_type = "ehft_roberta"

    def __init__(self, ehft_head_inner_dim=2048, ehft_head_activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.ehft_head_inner_dim = ehft_head_inner_dim
        self.ehft_head_activation = ehft_head_activation


class EhftBertConfig(BertConfig):
    model_type = "ehft_bert"

    def __init__(self, ehft_head_inner_dim=2048, ehft_head_activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.ehft_head_inner_dim = ehft_head_inner_dim
        self.ehft_head_activation = ehft_head_activation


class EhftRobertaForSequenceClassification(RobertaForSequenceClassification):
    config_class = EhftRobertaConfig

    def __init__(self, config):
        super().__init__(config)
        self.classifier = EhftClassificationHead(config)
        self.post_init()


class EhftBertForSequenceClassification(BertForSequenceClassification):
    config_class = EhftBertConfig

    def __init__(self, config):
        super().__init__(config)
        self.bert.pooler = _FirstToken()
        self.dropout = nn.Identity()  # the head drops out before each of its layers
        self.classifier = EhftClassificationHead(config)
        self.post_init()
