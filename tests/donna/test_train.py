"""The training loop: learns, distils, and resumes from a checkpoint to the same weights."""

import pytest
import torch
from torch.utils.data import TensorDataset

from donna.train import TrainConfig, distillation_loss, evaluate, resumed_epoch, train


def _toy_data(n=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x.view(n, 4, 1, 1), y)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_training_learns_a_separable_problem():
    data = _toy_data()
    model = _model()
    history = train(model, data, data, TrainConfig(epochs=8, batch_size=16, lr=0.1))
    assert history.val_accuracy[-1] > 0.9 and evaluate(model, data) == history.val_accuracy[-1]


def test_kill_and_resume_gives_the_same_weights(tmp_path):
    data, cfg = _toy_data(), TrainConfig(epochs=4, batch_size=16, lr=0.1, seed=3)
    reference = _model()
    train(reference, data, None, cfg)

    def die_after_epoch_1(epoch, loss, acc):
        if epoch == 1:
            raise KeyboardInterrupt

    killed = _model()
    assert resumed_epoch(tmp_path / "ckpt.pt") == 0  # no checkpoint yet: a progress bar starts at 0
    with pytest.raises(KeyboardInterrupt):
        train(killed, data, None, cfg, checkpoint=tmp_path / "ckpt.pt", on_epoch=die_after_epoch_1)
    assert resumed_epoch(tmp_path / "ckpt.pt") == 2  # epochs 0 and 1 are in it: the bar resumes at 2 of 4
    resumed = _model(seed=99)  # a fresh process: weights come from the checkpoint only
    history = train(resumed, data, None, cfg, checkpoint=tmp_path / "ckpt.pt")
    assert len(history.train_loss) == 4
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    data = _toy_data()
    train(_model(), data, None, TrainConfig(epochs=1), checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="other training settings"):
        train(_model(), data, None, TrainConfig(epochs=2), checkpoint=tmp_path / "c.pt")


def test_distillation_term_pulls_towards_the_teacher():
    logits = torch.tensor([[2.0, 0.0]])
    labels = torch.tensor([0])
    cfg = TrainConfig(kd_weight=0.5)
    agree = distillation_loss(logits, labels, torch.tensor([[2.0, 0.0]]), cfg)
    disagree = distillation_loss(logits, labels, torch.tensor([[0.0, 2.0]]), cfg)
    assert disagree > agree
    assert distillation_loss(logits, labels, None, cfg) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, labels)))
