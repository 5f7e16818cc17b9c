"""The trainer's extras registry (training/extras): which methods' parts a configuration switches
on and in what order, and that a part registered there reaches the run through its hooks alone
(its loss term in the total and the logged terms, its sub-network in the optimiser and in every
checkpoint, its state in adam.pth and back on resume) -- the loop has no branch for it.
(A tiny synthetic bag at 64x64, batch 2, one thread.)"""
import pytest
import torch

from depth_ego_ros.training import extras as extras_mod
from depth_ego_ros.training.config import TrainConfig
from depth_ego_ros.training.extras import Extra, enabled_extras
from depth_ego_ros.training.trainer import STATE_FILE, Trainer
from train_testing import drive_bag, fixed_batch, loss_on, method_config  # test/train_testing.py

pytestmark = pytest.mark.usefixtures('torch_one_thread')


def _names(**kw):
    return [e.name for e in enabled_extras(TrainConfig(**kw))]


def test_configuration_switches_extras_on_in_registry_order():
    assert _names() == []
    assert _names(pose_model='posexp') == ['explainability']
    assert _names(pose_model='posexp', explainability_weight=0.0) == []
    assert _names(explainability_weight=0.5) == []           # monodepth2 pose net: no masks
    everything = dict(pose_model='posexp', learned_intrinsics=True, alignment_weight=0.1,
                      object_motion=True, object_size_weight=0.1, depth_normalization='sequence')
    assert _names(**everything) == ['depth_normalization', 'explainability', 'alignment',
                                    'learned_intrinsics', 'object_motion', 'object_size']
    ex = enabled_extras(TrainConfig(**everything))
    assert 'alignment' in ex and 'object_motion' in ex and ex.get('nothing') is None
    # the held-out keys follow the registry order (the loss terms are added in that order too)
    assert ex.val_keys[:3] == ('explainability', 'mask_mean', 'alignment')
    assert ex.val_keys[-4:] == ('object_translation', 'object_rotation', 'object_size', 'object_height')


class _Offset(Extra):
    """A made-up part: a learned scalar added to the loss (weight 0.5), counted steps in
    adam.pth, a per-epoch record."""
    name = 'offset'
    val_keys = ('offset',)

    def __init__(self, config):
        super().__init__(config)
        self.steps = 0

    @classmethod
    def enabled(cls, config) -> bool:
        return True

    def attach(self, model):
        model.extras['offset'] = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(model.extras['offset'].weight, 2.0)

    def add_terms(self, out, li):
        term = self.net.weight.sum() ** 2
        out.total = out.total + 0.5 * term
        out.terms['offset'] = term.detach()

    def prepare(self, model, source, data, resumed):
        self.net = model.extras['offset']
        return ['offset ready']

    def after_step(self, fwd):
        self.steps += 1

    def epoch_record(self, rec):
        return {'offset_rec': {'steps': float(self.steps)}}

    def state_dict(self):
        return {'offset_steps': self.steps}

    def load_state_dict(self, saved):
        self.steps = saved.get('offset_steps', 0)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    return drive_bag(tmp_path_factory, 'extras_data', 8, 64, 64)


@pytest.mark.timeout(240)
def test_a_registered_extra_reaches_loss_optimiser_checkpoint_and_resume(bag, tmp_path, monkeypatch):
    monkeypatch.setattr(extras_mod, 'REGISTRY', extras_mod.REGISTRY + (_Offset,))
    out = tmp_path / 'run'
    tr = Trainer(method_config(bag, out, 64, 64, epochs=1, max_steps=2))
    assert 'offset ready' in tr.init_notes
    net = tr.model.extras['offset']
    assert any(p is net.weight for g in tr.optimizer.param_groups for p in g['params'])
    batch = fixed_batch(tr, 2)
    o = loss_on(tr, batch)
    assert float(o.terms['offset']) == pytest.approx(4.0)
    with torch.no_grad():
        net.weight.fill_(0.0)
        o0 = loss_on(tr, batch)
        net.weight.fill_(2.0)
    assert float(o0.terms['offset']) == 0.0
    assert float(o.total) - float(o0.total) == pytest.approx(0.5 * 4.0, abs=1e-5)
    summary = tr.fit()
    assert summary['steps'] == 2
    rec = summary['history'][0]
    assert 'offset' in rec['train'] and rec['offset_rec'] == {'steps': 2.0}
    assert float(net.weight.detach()) < 2.0                 # it trained
    ck = out / 'weights_0'
    assert (ck / 'offset.pth').is_file()
    assert torch.load(ck / STATE_FILE, weights_only=True)['offset_steps'] == 2
    tr2 = Trainer(method_config(bag, out, 64, 64, epochs=2, max_steps=3), resume=out)
    assert tr2.extras['offset'].steps == 2
    assert torch.equal(tr2.model.extras['offset'].weight, net.weight.detach())
