"""Models of a run, rebuilt from the fairseq-train command it recorded, and what the
diagnostics measure on them: backbone features, the head's hidden layer, the gradient that
reaches the backbone.

Everything runs in eval mode (no dropout), so that two measurements differ only by the
weights they compare.
"""

import torch

from ...models.drift import BACKBONE
from ...train import rebuild
from ...train.handover import load_head
from .runs import AnalyzeError


class Built(rebuild.Built):
    """A run's model with what the diagnostics measure on it."""

    def load_head(self, path):
        """A head handed over by stage 1 (stage1/head.safetensors)."""
        tensors = load_head(path)
        prefix = "classification_heads.%s." % self.head_name
        own = self.head.state_dict()
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise AnalyzeError("%s: a head of another shape or name than the task's %r"
                               % (path, self.head_name))
        self.head.load_state_dict(state)

    @torch.no_grad()
    def features(self, sample):
        """The backbone's final-layer features at <s> (what the head reads), [batch, dim]; a
        ranking task's candidates side by side, [batch, choices * dim]."""
        return torch.cat([self.model(**net_input, features_only=True)[0][:, 0, :].float()
                          for net_input in self._inputs(sample)], dim=1)

    @torch.no_grad()
    def head_hidden(self, sample):
        """The head's hidden layer (activation of its dense layer) at <s>, [batch, inner]."""
        head = self.head
        features = self.model(**sample["net_input"], features_only=True)[0][:, 0, :]
        return head.activation_fn(head.dense(features)).float()

    def backbone_gradient_norm(self, sample):
        """‖∂L/∂θ_backbone‖ of the mean loss over `sample`, with the current head."""
        self.model.zero_grad(set_to_none=True)
        loss, sample_size, _ = self.criterion(self.model, sample)
        (loss / sample_size).backward()
        squares = [p.grad.float().pow(2).sum() for n, p in self.model.named_parameters()
                   if n.startswith(BACKBONE) and p.grad is not None]
        self.model.zero_grad(set_to_none=True)
        if not squares:
            raise AnalyzeError("no gradient reached the backbone (is it frozen by --peft?)")
        return float(torch.stack(squares).sum().sqrt())

