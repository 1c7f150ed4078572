"""Data-parallel training equals one process on the same global batches (2 gloo processes, no Ray)."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainables.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig
from trainables.data import epoch_batches, load_dataset
from trainables.distributed import Shard
from trainables.experiment import Experiment
from trainables.losses import DiscretizedNLL, SmoothedNLL
from trainables.pixelcnnpp import PixelCNNpp
from trainables.training import TrainUnit, train_epoch

WORLD = 2
# 8 digits images per global batch, 70 images: 8 full steps and an uneven last one (6 rows: 3 + 3),
# then an epoch of 9-image batches whose last batch has 7 rows (4 + 3): the loss scaling must hold.
IMAGES, STEPS_BATCH, ODD_BATCH = 70, 8, 9


def _unit(loss, shard=Shard()):
    torch.manual_seed(0)
    model = PixelCNNpp(1, 8, 1, 3, dropout=0.0)
    return TrainUnit.create(model, loss, lr=3e-3, lr_decay=0.999, grad_clip=1.0, shard=shard)


def _train(shard, loss, noise_std):
    images = load_dataset("digits", "train")[:IMAGES]
    unit = _unit(loss, shard)
    stats = [train_epoch(unit, epoch_batches(images, b, noise_std, 0, e), epoch=e, device="cpu", shard=shard)
             for e, b in ((1, STEPS_BATCH), (2, ODD_BATCH))]
    params = torch.cat([p.detach().flatten() for p in unit.model.parameters()])
    return [s.step_losses for s in stats], [(s.nll_nats, s.num_dims, s.num_images) for s in stats], params


CASES = [(DiscretizedNLL(), 0.0), (SmoothedNLL(), 0.3)]


def _cfg(workers):  # 200 training images: 4 global batches of 64, the last one short (8 rows: 4 + 4)
    return TrialConfig(ModelConfig(nr_filters=8, nr_resnet=1, num_mixtures=3),
                       DataConfig(noise_std=0.3, train_subset=200),
                       TrainConfig(batch_size=64, max_epochs=3, workers_per_trial=workers),
                       EvalConfig(eval_every=5, max_eval_images=64))


def _worker(rank, init_file, out_file):
    """One rank: the steps of every case and one Experiment epoch, in one process group
    (one spawn for the whole module keeps the test short)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        shard = Shard.from_process_group()
        steps = [_train(shard, loss, noise_std) for loss, noise_std in CASES]
        exp = Experiment(_cfg(WORLD), device="cpu", log=lambda m: None, shard=shard)
        torch.save({"steps": steps, "epoch": exp.run_epoch()}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "result"
    mp.spawn(_worker, args=(str(tmp / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow  # two spawned processes, each importing torch and training: ~20 CPU-s
@pytest.mark.parametrize("case", range(len(CASES)))
def test_two_processes_take_the_same_steps_as_one(two_ranks, case):
    one_losses, one_stats, one_params = _train(Shard(), *CASES[case])
    ranks = [r["steps"][case] for r in two_ranks]
    for losses, stats, params in ranks:  # every rank holds the global numbers
        for one, two, batch in zip(one_losses, losses, (STEPS_BATCH, ODD_BATCH)):
            assert len(one) == len(two) == -(-IMAGES // batch)
            diff = max(abs(a - b) for a, b in zip(one, two))
            print(f"max |loss diff| over {len(one)} steps: {diff:.2e} (losses ~{one[0]:.3f} nats/dim)")
            assert diff < 1e-5
        for (nll1, dims1, n1), (nll2, dims2, n2) in zip(one_stats, stats):
            assert (dims1, n1) == (dims2, n2) == (IMAGES * 64, IMAGES)
            assert nll2 == pytest.approx(nll1, rel=1e-5)
        torch.testing.assert_close(params, one_params, rtol=1e-4, atol=1e-5)
    assert torch.equal(ranks[0][2], ranks[1][2])  # DDP keeps the replicas identical


@pytest.mark.slow  # shares the two spawned processes above
def test_an_experiment_epoch_on_two_processes_reports_the_one_process_metrics(two_ranks):
    one = Experiment(_cfg(1), device="cpu", log=lambda m: None).run_epoch()
    main, other = (r["epoch"] for r in two_ranks)
    for key in ("train_bpd_smoothed", "train_bpd_denoiser", "test_bpd_smoothed", "test_bpd_denoiser", "bpd_bound"):
        assert main[key] == pytest.approx(one[key], abs=1e-4), key
    assert "test_bpd_smoothed" not in other  # rank 1 trains only
    assert other["train_bpd_smoothed"] == main["train_bpd_smoothed"]


def test_rows_split_every_global_batch_without_overlap():
    x = torch.arange(7).view(7, 1)
    parts = [Shard(r, 3).rows((x,))[0].flatten().tolist() for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    assert Shard(0, 1).rows((x,))[0] is x
    # mean over ranks of world * (slice sum) / B equals the global mean
    scaled = [Shard(r, 3).loss_scale(len(p), 7) * sum(p) for r, p in enumerate(parts)]
    assert sum(scaled) / 3 == pytest.approx(sum(range(7)) / 7)


def test_a_batch_the_workers_do_not_divide_is_refused():
    with pytest.raises(ValueError, match="batch_size 64 must be divisible by workers_per_trial 3"):
        TrialConfig.from_flat({"workers_per_trial": 3, "batch_size": 64})
