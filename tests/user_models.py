"""Models as users have them, for tests/test_user_models.py: a LightningModule with its own
recipe, and a Hugging Face GPT-2 (tiny config, random weights) returning its output object.
Each imports its package only when called, so this file loads without either."""

import torch


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl
    return pl


def _lit_module(n_features, n_outputs, configure_optimizers, returns_dict=False):
    """A LightningModule MLP (32 hidden units) trained with cross-entropy, whose recipe is
    ``configure_optimizers(module)``; ``returns_dict``: its training_step logs and returns
    ``{"loss": ...}`` instead of the loss tensor (both shapes Lightning accepts)."""
    pl = _lightning()

    class LitMLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(n_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, n_outputs))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            if not returns_dict:
                return loss
            self.log("train_loss", loss)
            return {"loss": loss}

        def configure_optimizers(self):
            return configure_optimizers(self)

    return LitMLP()


def lightning_mlp(n_features, n_outputs):
    """AdamW with weight decay and a per-step cosine schedule, in configure_optimizers."""

    def recipe(module):
        optimizer = torch.optim.AdamW(module.parameters(), lr=0.01, weight_decay=0.02, betas=(0.9, 0.95))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=60)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return _lit_module(n_features, n_outputs, recipe, returns_dict=True)


def lightning_onecycle(n_features, n_outputs):
    """AdamW(lr 3e-3, weight decay 0.05) with OneCycleLR stepped every step: a schedule bound to
    its total_steps (200), as users write it."""

    def recipe(module):
        optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=0.05)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=200)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return _lit_module(n_features, n_outputs, recipe)


def lightning_plain(n_features, n_outputs):
    """SGD with momentum and no scheduler: what ``cbs`` takes."""
    return _lit_module(n_features, n_outputs, lambda module: torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9))


def _gpt2(n_outputs):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=n_outputs, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def hf_gpt2(n_outputs):
    """The model alone: it returns a CausalLMOutputWithCrossAttentions, whose logits the task's
    loss and accuracy read."""
    return _gpt2(n_outputs)


def hf_gpt2_with_loss(n_outputs):
    """With a loss of the user's that reads ``.logits`` itself."""

    def loss_fn(out, target):
        return torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), target.flatten())

    return _gpt2(n_outputs), loss_fn
