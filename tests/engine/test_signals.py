"""Stop signals: handlers only while training, in the main thread; the first signal asks,
the second stops at once; loader workers ignore them. Real signals to this process."""

import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from densetasks.engine import train
from densetasks.engine.config import validate_config
from densetasks.engine.signals import (
    STOP_SIGNALS,
    TrainingStopped,
    ignore_stop_signals,
    stop_signals,
)


def handlers() -> dict[int, object]:
    return {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}


def test_handlers_are_installed_for_the_block_only_even_when_it_raises():
    before = handlers()
    with pytest.raises(ValueError), stop_signals(announce=False) as request:
        assert set(handlers().values()) == {request.handle}
        raise ValueError
    assert handlers() == before


def test_the_first_signal_is_recorded_and_announced_and_a_second_stops_at_once(capfd):
    with stop_signals() as request:
        os.kill(os.getpid(), signal.SIGUSR1)  # handled before os.kill returns to Python
        assert request.signum == signal.SIGUSR1
        with pytest.raises(TrainingStopped) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
    stop = raised.value
    assert stop.at_once and stop.step is None and stop.exit_status == 143
    assert str(stop) == "stopped at once by a second signal (SIGTERM)"
    assert capfd.readouterr().err == (
        "densetasks: SIGUSR1: stopping after this step (a second signal stops at once)\n"
    )


def test_a_stop_after_a_step_names_signal_step_and_checkpoint():
    stop = TrainingStopped(signal.SIGINT, 40, Path("runs/a/checkpoints/last.pt"))
    assert not stop.at_once and stop.exit_status == 130 and isinstance(stop, KeyboardInterrupt)
    assert str(stop) == "stopped by SIGINT after step 40 (saved runs/a/checkpoints/last.pt)"


def test_outside_the_main_thread_no_handler_is_installed():
    before, seen = handlers(), []

    def in_a_thread():
        with stop_signals() as request:
            seen.append((handlers(), request.signum))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [(before, 0)]


def test_train_puts_back_the_handlers_it_found(tmp_path):
    def own_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGUSR1, own_handler)
    try:
        config = {
            "tasks": {"depth": {}},
            "data": {"options": {"n_train": 2, "n_val": 1, "n_test": 1, "size": [32, 32]}},
            "model": {"architecture": "hard_sharing", "encoder": "tiny", "bottleneck": "none"},
            "train": {"steps": 1, "images_every": 0},
        }
        train(validate_config(config), tmp_path / "run")
        assert signal.getsignal(signal.SIGUSR1) is own_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGUSR1, previous)


class SignalDispositions(Dataset):
    """Reports, from inside a loader worker, what each stop signal does there."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([int(signal.getsignal(signum)) for signum in STOP_SIGNALS])


def test_loader_workers_ignore_the_stop_signals():
    loader = DataLoader(SignalDispositions(), num_workers=1, worker_init_fn=ignore_stop_signals)
    (dispositions,) = list(loader)
    assert dispositions.tolist() == [[int(signal.SIG_IGN)] * len(STOP_SIGNALS)]
