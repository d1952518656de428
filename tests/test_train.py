"""Training loop: LeNet on the bundled digits, evaluate/predict, callbacks, history, bad input."""
import threading

import numpy as np
import pytest

import fastcnn
import fastcnn._random as R
from fastcnn import data, metrics, nn, optim
from fastcnn.optim import lr_scheduler
from fastcnn.train import Callback, EarlyStopping, History, LambdaCallback, evaluate, fit, predict


@pytest.fixture(autouse=True)
def _one_thread():
    """Batches of tiny images: one thread is the fastest setting (and robust on a busy machine)."""
    fastcnn.set_num_threads(1)


def lenet(seed):
    R.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10))


@pytest.fixture(scope="module")
def digits():
    x, y = data.load_digits()
    return data.train_test_split(x, y, test_size=0.25, seed=0, stratify=True)


def toy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def test_lenet_digits_reaches_95_percent(digits, capsys):
    x_tr, x_te, y_tr, y_te = digits
    model = lenet(0)
    crit = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    hist = fit(model, crit, opt, x_tr, y_tr, epochs=5, batch_size=32, validation_data=(x_te, y_te),
               seed=0, scheduler=sched, progress=True)
    assert isinstance(hist, History) and hist.epoch == list(range(5))
    assert set(hist) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 5 for v in hist.values())
    assert hist["loss"][-1] < hist["loss"][0]
    result = evaluate(model, crit, x_te, y_te)
    assert result["accuracy"] >= 0.95, hist
    assert result["accuracy"] == pytest.approx(hist["val_accuracy"][-1])
    logits = predict(model, x_te, batch_size=100)
    assert logits.shape == (len(x_te), 10)
    assert metrics.accuracy(y_te, logits) == result["accuracy"]
    err = capsys.readouterr().err
    assert "Epoch 5/5" in err and "img/s" in err and "loss=" in err and "acc" in err


def test_predict_is_thread_safe_and_keeps_mode():
    model = lenet(1)
    x, _ = toy(50)
    model.train()
    expected = predict(model, x, batch_size=7)
    assert model.training  # restored
    model.eval()
    # batches of different sizes may take different kernels (rounding differs)
    np.testing.assert_allclose(expected, predict(model, x), rtol=1e-5, atol=1e-6)
    results, errors = {}, []

    def worker(i):
        try:
            for _ in range(5):
                r = predict(model, x[i:i + 20], batch_size=3)
                np.testing.assert_allclose(r, expected[i:i + 20], rtol=1e-5, atol=1e-6)
            results[i] = True
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(0, 30, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(results) == len(threads)


def test_evaluate_restores_mode_and_weights_batches():
    model = lenet(2)
    crit = nn.CrossEntropyLoss()
    x, y = toy(37)
    model.eval()
    full = crit(model(x), y)
    model.train()
    r = evaluate(model, crit, x, y, batch_size=5)
    assert model.training
    assert r["loss"] == pytest.approx(full, rel=1e-5)
    r_sum = evaluate(model, nn.CrossEntropyLoss(reduction="sum"), x, y, batch_size=5)
    assert r_sum["loss"] == pytest.approx(full, rel=1e-5)


def test_fit_regression_has_no_accuracy_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)

    def run():
        R.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 1))
        hist = fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1), x, y, epochs=5,
                   batch_size=8, seed=4, progress=False)
        return model, hist

    (m1, h1), (m2, h2) = run(), run()
    assert "accuracy" not in h1 and h1["loss"][-1] < h1["loss"][0]
    assert h1["loss"] == h2["loss"]
    for k, v in m1.state_dict().items():
        assert np.array_equal(v, m2.state_dict()[k])


def test_callbacks_and_early_stopping():
    x, y = toy(32)
    model = lenet(3)
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, logs):
            calls.append("begin")
            assert self.model is model

        def on_epoch_begin(self, epoch, logs):
            calls.append(("epoch", epoch))

        def on_batch_end(self, batch, logs):
            calls.append(("batch", batch, logs["size"]))

        def on_train_end(self, logs):
            calls.append("end")

    seen = []
    # lr 0 -> no improvement ever: EarlyStopping with patience 1 stops after the 3rd epoch
    stopper = EarlyStopping(monitor="loss", patience=1, min_delta=1.0)
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), x, y, epochs=10, batch_size=16,
        progress=False, seed=0, callbacks=[Recorder(), stopper, lambda e, logs: seen.append(e),
                                          LambdaCallback(on_epoch_end=lambda e, logs: seen.append(-e))])
    assert stopper.stopped_epoch == 2 and seen == [0, 0, 1, -1, 2, -2]
    assert calls[0] == "begin" and calls[-1] == "end"
    assert calls[1:5] == [("epoch", 0), ("batch", 0, 16), ("batch", 1, 16), ("epoch", 1)]
    with pytest.raises(ValueError, match="monitors"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), x, y, progress=False,
            callbacks=EarlyStopping(monitor="val_loss"))


def test_early_stopping_restores_best_weights():
    x, y = toy(32)
    model = lenet(4)
    stopper = EarlyStopping(monitor="loss", patience=0, mode="max", restore_best_weights=True)
    fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.01), x, y, epochs=5,
        batch_size=8, progress=False, seed=0, callbacks=[stopper])
    # "max" of a decreasing loss: the first epoch is the best, its weights come back
    assert stopper.stopped_epoch == 1
    for k, v in stopper.best_weights.items():
        assert np.array_equal(model.state_dict()[k], v)


def test_progress_false_prints_nothing(capsys):
    x, y = toy(16)
    model = lenet(5)
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), x, y, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_arguments():
    x, y = toy(16)
    model = lenet(6)
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="one entry per sample"):
        fit(model, crit, opt, x, y[:5], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, crit, opt, x, y, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, crit, opt, x, y, epochs=-1, progress=False)
    with pytest.raises(ValueError, match="validation_data"):
        fit(model, crit, opt, x, y, validation_data=x, progress=False)
    with pytest.raises(TypeError, match="model"):
        fit(object(), crit, opt, x, y, progress=False)
    with pytest.raises(TypeError, match="loss"):
        fit(model, lambda a, b: 0.0, opt, x, y, progress=False)
    with pytest.raises(TypeError, match="callbacks"):
        fit(model, crit, opt, x, y, callbacks=[1], progress=False)
    with pytest.raises(ValueError, match="resume"):
        fit(model, crit, opt, x, y, resume=True, progress=False)
    with pytest.raises(ValueError, match="batch dimension"):
        predict(model, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="no samples"):
        predict(model, np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="one entry per sample"):
        evaluate(model, crit, x, y[:3])
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
