"""The command line: fit / score / sample agree with the Python API, and
every user error prints one line, no traceback, and a non-zero status."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import skflow
from skflow import ConditionalFlowMatchingDensity, FlowMatchingDensity
from skflow.cli import main, parameter_docs, read_data

FAST = ["--hidden-layer-sizes", "16,16", "--max-iter", "30", "--random-state", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    X = np.random.RandomState(0).normal(size=(60, 2))
    np.save(folder / "X.npy", X)
    np.savetxt(folder / "X.csv", X, delimiter=",", fmt="%.17g")
    np.savetxt(
        folder / "header.csv", X, delimiter=",", fmt="%.17g", header="a,b", comments=""
    )
    return X, folder


@pytest.fixture(scope="module")
def model(data):
    _, folder = data
    status = main(
        ["fit", str(folder / "X.csv"), "-o", str(folder / "model.skflow"), *FAST]
    )
    assert status == 0
    return folder / "model.skflow"


def test_fit_matches_the_python_api(data, model):
    X, _ = data
    loaded = skflow.load(model)
    expected = FlowMatchingDensity(
        hidden_layer_sizes=(16, 16), max_iter=30, random_state=0
    ).fit(X)
    assert loaded.get_params() == expected.get_params()
    assert_array_equal(loaded.score_samples(X), expected.score_samples(X))


@pytest.mark.parametrize("source", ["X.csv", "header.csv", "X.npy"])
@pytest.mark.parametrize("target", ["scores.csv", "scores.npy"])
def test_score_reads_csv_or_npy_and_writes_either(data, model, source, target):
    X, folder = data
    assert (
        main(["score", str(model), str(folder / source), "-o", str(folder / target)])
        == 0
    )
    written = (
        np.load(folder / target)
        if target.endswith(".npy")
        else np.loadtxt(folder / target, delimiter=",")
    )
    # CSV cells carry 17 significant digits: the float64 round trip is exact.
    assert_array_equal(written, skflow.load(model).score_samples(X))


def test_score_and_sample_write_to_standard_output(data, model, capsys):
    X, folder = data
    capsys.readouterr()
    assert main(["score", str(model), str(folder / "X.npy")]) == 0
    printed = np.loadtxt(capsys.readouterr().out.splitlines())
    assert_array_equal(printed, skflow.load(model).score_samples(X))
    assert main(["sample", str(model), "-n", "5", "--random-state", "3"]) == 0
    printed = np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",")
    assert_array_equal(printed, skflow.load(model).sample(5, random_state=3))


def test_every_estimator_parameter_is_an_option_with_its_docstring():
    docs = parameter_docs(FlowMatchingDensity.__doc__)
    assert set(docs) == set(FlowMatchingDensity().get_params())
    # --target fits the conditional estimator with the same options, but
    # for the field's architecture (test_conditional_model_refuses_...).
    conditional = set(ConditionalFlowMatchingDensity().get_params())
    assert set(docs) - {"architecture"} == conditional
    assert docs["sigma"].startswith(
        '(float or "auto", default=0.01) The path\'s noise level'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "skflow", "fit", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in docs:
        assert "--" + name.replace("_", "-") in completed.stdout
    assert "--target" in completed.stdout
    # argparse wraps the help text: compare with its line breaks undone.
    assert "The path's noise level" in " ".join(completed.stdout.split())


def _bad(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


BAD_COMMANDS = {
    "missing-data": (
        lambda d, m: ["fit", str(d / "nope.csv"), "-o", "m"],
        1,
        "no such file",
    ),
    "non-numeric": (
        lambda d, m: ["fit", _bad(d, "bad.csv", "1,2\n3,abc\n"), "-o", "m"],
        1,
        "bad.csv: line 2: 'abc' is not a number",
    ),
    "ragged": (
        lambda d, m: ["fit", _bad(d, "ragged.csv", "1,2\n3,4,5\n"), "-o", "m"],
        1,
        "ragged.csv: line 2 has 3 columns, the lines above 2",
    ),
    # A first row with a typo or an empty cell is data, not a header: the
    # error names its line (the header, when there is one, is counted).
    "typo-in-first-row": (
        lambda d, m: ["fit", _bad(d, "typo.csv", "1,2x\n3,4\n5,6\n"), "-o", "m"],
        1,
        "typo.csv: line 1: '2x' is not a number",
    ),
    "empty-cell-in-first-row": (
        lambda d, m: ["fit", _bad(d, "cell.csv", "1,\n3,4\n5,6\n"), "-o", "m"],
        1,
        "cell.csv: line 1: an empty cell is not a number",
    ),
    "error-below-a-header": (
        lambda d, m: ["fit", _bad(d, "h.csv", "a,b\n1,2\n3,x\n"), "-o", "m"],
        1,
        "h.csv: line 3: 'x' is not a number",
    ),
    "output-folder-missing": (
        lambda d, m: ["fit", str(d / "X.csv"), "-o", str(d / "nodir" / "m.skflow")],
        1,
        "no folder",
    ),
    "too-many-samples": (
        lambda d, m: ["sample", str(m), "-n", "10000000000000"],
        1,
        "more than half this machine's memory",
    ),
    "empty": (lambda d, m: ["fit", _bad(d, "empty.csv", ""), "-o", "m"], 1, "0 sample"),
    "nan": (
        lambda d, m: ["fit", _bad(d, "nan.csv", "1,2\n3,nan\n4,5\n"), "-o", "m"],
        1,
        "Input X contains NaN",
    ),
    "one-row": (
        lambda d, m: ["fit", _bad(d, "one.csv", "1,2\n"), "-o", "m"],
        1,
        "1 sample",
    ),
    "bad-parameter": (
        lambda d, m: ["fit", str(d / "X.csv"), "-o", "m", "--sigma", "-1"],
        1,
        "'sigma' parameter of FlowMatchingDensity",
    ),
    "unknown-option": (
        lambda d, m: ["fit", str(d / "X.csv"), "-o", "m", "--colour", "red"],
        2,
        "unrecognized arguments: --colour red",
    ),
    "no-output": (lambda d, m: ["fit", str(d / "X.csv")], 2, "required: -o/--output"),
    "wrong-columns": (
        lambda d, m: ["score", str(m), _bad(d, "three.csv", "1,2,3\n4,5,6\n")],
        1,
        "X has 3 features, but FlowMatchingDensity is expecting 2",
    ),
    "not-a-model": (
        lambda d, m: ["score", str(d / "X.csv"), str(d / "X.csv")],
        1,
        "it is not a skflow model file",
    ),
    "missing-model": (
        lambda d, m: ["sample", str(d / "nope.skflow"), "-n", "3"],
        1,
        "No such file",
    ),
    "zero-samples": (lambda d, m: ["sample", str(m), "-n", "0"], 1, "n_samples == 0"),
    "non-integer-samples": (
        lambda d, m: ["sample", str(m), "-n", "abc"],
        2,
        "invalid int value: 'abc'",
    ),
    "unknown-command": (lambda d, m: ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
}


@pytest.mark.parametrize("name", BAD_COMMANDS)
def test_user_errors_print_one_line_and_exit_non_zero(data, model, name, capsys):
    # In-process, so an uncaught exception (a traceback) fails the test.
    _, folder = data
    make_args, status, message = BAD_COMMANDS[name]
    capsys.readouterr()
    try:
        returned = main(make_args(folder, model))
    except SystemExit as exit:  # argparse's own errors
        returned = exit.code
    stderr = capsys.readouterr().err
    assert returned == status
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_demo_prints_the_comparison_and_draws_the_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "demo.png"
    assert main(["demo", "-o", str(figure), "--max-iter", "20"]) == 0
    out = capsys.readouterr().out
    for name in ("FlowMatchingDensity", "KernelDensity", "GaussianMixture"):
        assert name in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_parses_booleans_and_none(data, tmp_path):
    _, folder = data
    output = tmp_path / "discrete.skflow"
    options = ["--dequantize", "True", "--n-iter-no-change", "none"]
    status = main(["fit", str(folder / "X.csv"), "-o", str(output), *FAST, *options])
    assert status == 0
    params = skflow.load(output).get_params()
    assert params["dequantize"] is True and params["n_iter_no_change"] is None


def test_a_byte_order_mark_is_not_part_of_the_first_cell(data, tmp_path):
    X, _ = data
    text = "\n".join(",".join(f"{v:.17g}" for v in row) for row in X[:5])
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "bom-header.csv").write_bytes(b"\xef\xbb\xbfa,b\n" + text.encode())
    for name in ("bom.csv", "bom-header.csv"):
        assert_array_equal(read_data(str(tmp_path / name)), X[:5])


def test_fit_checks_its_output_before_training(data, monkeypatch, capsys):
    _, folder = data

    def no_training(self, *args, **kwargs):
        raise AssertionError("fit started before the output path was checked")

    monkeypatch.setattr(FlowMatchingDensity, "fit", no_training)
    status = main(["fit", str(folder / "X.csv"), "-o", str(folder / "no" / "m")])
    assert status == 1
    assert "no folder" in capsys.readouterr().err


def test_an_interrupted_output_leaves_the_previous_file_and_no_partial_one(
    data, model, tmp_path, monkeypatch
):
    out = tmp_path / "samples.csv"
    out.write_text("previous\n")

    def disk_full(file, *args, **kwargs):
        file.write(b"0.1,0.2\n")  # a partial write, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savetxt", disk_full)
    assert main(["sample", str(model), "-n", "5", "-o", str(out)]) == 1
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.csv"]


def test_a_named_pipe_as_model_is_refused_without_blocking(data, tmp_path, capsys):
    _, folder = data
    pipe = tmp_path / "model.fifo"
    os.mkfifo(pipe)
    status = main(["score", str(pipe), str(folder / "X.csv")])
    assert status == 1
    assert "is not a regular file" in capsys.readouterr().err


TINY_OPTIONS = [
    *("--hidden-layer-sizes", "16,16", "--max-iter", "20", "--batch-size", "32"),
    *("--random-state", "0"),
]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A table whose middle column ("y") depends on the two others, as CSV
    with a header and as .npy, and a file of 4 conditions (columns 0, 2)."""
    folder = tmp_path_factory.mktemp("conditional")
    rng = np.random.RandomState(0)
    data = rng.normal(size=(60, 3))
    data[:, 1] = data[:, 0] - data[:, 2] + 0.1 * rng.normal(size=60)
    np.savetxt(
        folder / "pairs.csv",
        data,
        delimiter=",",
        fmt="%.17g",
        header="a,y,b",
        comments="",
    )
    np.save(folder / "pairs.npy", data)
    np.savetxt(folder / "conditions.csv", data[:4, [0, 2]], delimiter=",", fmt="%.17g")
    return data, folder


@pytest.fixture(scope="module")
def conditional_model(pairs):
    _, folder = pairs
    model = folder / "conditional.skflow"
    argv = ["fit", str(folder / "pairs.csv"), "--target", "y", "-o", str(model)]
    assert main([*argv, *TINY_OPTIONS]) == 0
    return model


def _printed(capsys):
    return np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",", ndmin=2)


def test_fit_with_target_matches_the_python_api(pairs, conditional_model):
    data, _ = pairs
    loaded = skflow.load(conditional_model)
    assert type(loaded) is ConditionalFlowMatchingDensity
    expected = ConditionalFlowMatchingDensity(
        hidden_layer_sizes=(16, 16), max_iter=20, batch_size=32, random_state=0
    ).fit(data[:, [0, 2]], data[:, 1])
    assert loaded.get_params() == expected.get_params()
    assert loaded.get_params()["dequantize"] is False
    assert (loaded.n_targets_, loaded.n_features_in_, loaded._y_ndim) == (1, 2, 1)
    X, y = data[:, [0, 2]], data[:, 1]
    assert_array_equal(loaded.score_samples(X, y), expected.score_samples(X, y))


def test_conditional_score_sample_and_predict_agree_with_the_model(
    pairs, conditional_model, capsys
):
    data, folder = pairs
    model = skflow.load(conditional_model)
    X, y, conditions = data[:, [0, 2]], data[:, 1], data[:4, [0, 2]]
    capsys.readouterr()
    # Fitted by the header name, scored by the column's number in a .npy.
    argv = ["score", str(conditional_model), str(folder / "pairs.npy")]
    assert main([*argv, "--target", "1"]) == 0
    assert_array_equal(_printed(capsys)[:, 0], model.score_samples(X, y))
    conditions_file = str(folder / "conditions.csv")
    argv = ["sample", str(conditional_model), conditions_file, "-n", "3"]
    assert main([*argv, "--random-state", "5"]) == 0
    draws = _printed(capsys)
    assert draws.shape == (4 * 3, 1)
    # Line i * N + j: draw j given condition i.
    assert_array_equal(
        draws.reshape(4, 3), model.sample(conditions, n_samples=3, random_state=5)
    )
    assert main(["predict", str(conditional_model), conditions_file, "-n", "6"]) == 0
    assert_array_equal(_printed(capsys)[:, 0], model.predict(conditions, n_samples=6))


def test_two_targets_are_taken_in_the_order_given(pairs, tmp_path, capsys):
    data, folder = pairs
    model, output = tmp_path / "two.skflow", tmp_path / "draws.npy"
    source = str(folder / "pairs.npy")
    argv = ["fit", source, "--target", "2,0", "-o", str(model), *TINY_OPTIONS]
    assert main(argv) == 0
    loaded = skflow.load(model)
    X, y = data[:, [1]], data[:, [2, 0]]
    assert (loaded.n_targets_, loaded.n_features_in_, loaded._y_ndim) == (2, 1, 2)
    capsys.readouterr()
    assert main(["score", str(model), source, "--target", "2,0"]) == 0
    assert_array_equal(_printed(capsys)[:, 0], loaded.score_samples(X, y))
    np.save(tmp_path / "conditions.npy", X[:3])
    argv = ["sample", str(model), str(tmp_path / "conditions.npy"), "-n", "2"]
    assert main([*argv, "--random-state", "0", "-o", str(output)]) == 0
    expected = loaded.sample(X[:3], n_samples=2, random_state=0)
    assert_array_equal(np.load(output), expected.reshape(3 * 2, 2))
    assert main(["predict", str(model), str(tmp_path / "conditions.npy")]) == 0
    assert_array_equal(_printed(capsys), loaded.predict(X[:3]))


CONDITIONAL_BAD_COMMANDS = {
    "unknown-name": (
        lambda d, m, c: ["fit", str(d / "pairs.csv"), "--target", "zz", "-o", "m"],
        1,
        "pairs.csv has no column 'zz' in its header",
    ),
    "name-without-header": (
        lambda d, m, c: ["fit", str(d / "pairs.npy"), "--target", "y", "-o", "m"],
        1,
        "pairs.npy has no header row: give column numbers (0-based)",
    ),
    "out-of-range": (
        lambda d, m, c: ["fit", str(d / "pairs.npy"), "--target", "3", "-o", "m"],
        1,
        "--target column 3 is not in",
    ),
    "negative": (
        lambda d, m, c: ["fit", str(d / "pairs.npy"), "--target=-1", "-o", "m"],
        1,
        "columns are numbered 0 to 2",
    ),
    "twice": (
        lambda d, m, c: ["fit", str(d / "pairs.csv"), "--target", "1,y", "-o", "m"],
        1,
        "--target names column 1 twice",
    ),
    "every-column": (
        lambda d, m, c: ["fit", str(d / "pairs.npy"), "--target", "0,1,2", "-o", "m"],
        1,
        "--target takes all 3 columns",
    ),
    "empty-name": (
        lambda d, m, c: ["fit", str(d / "pairs.npy"), "--target", "0,,1", "-o", "m"],
        1,
        "has an empty column name",
    ),
    "conditional-hollow": (
        lambda d, m, c: [
            *("fit", str(d / "pairs.npy"), "--target", "0", "-o", "m"),
            *("--architecture", "hollow"),
        ],
        1,
        "--architecture: not an option of a conditional model (--target)",
    ),
    "score-without-target": (
        lambda d, m, c: ["score", str(c), str(d / "pairs.csv")],
        1,
        "holds a conditional model: give --target",
    ),
    "score-target-of-unconditional": (
        lambda d, m, c: ["score", str(m), str(d / "pairs.csv"), "--target", "1"],
        1,
        "holds an unconditional model: drop --target",
    ),
    "score-too-many-targets": (
        lambda d, m, c: ["score", str(c), str(d / "pairs.csv"), "--target", "1,2"],
        1,
        "X has 1 features, but ConditionalFlowMatchingDensity is expecting 2",
    ),
    "sample-without-conditions": (
        lambda d, m, c: ["sample", str(c), "-n", "3"],
        1,
        "holds a conditional model: give a file of conditions",
    ),
    "sample-conditions-of-unconditional": (
        lambda d, m, c: ["sample", str(m), str(d / "conditions.csv"), "-n", "3"],
        1,
        "holds an unconditional model: it takes no conditions",
    ),
    "sample-wrong-columns": (
        lambda d, m, c: ["sample", str(c), str(d / "pairs.csv"), "-n", "3"],
        1,
        "X has 3 features, but ConditionalFlowMatchingDensity is expecting 2",
    ),
    "sample-too-large": (
        lambda d, m, c: [
            "sample",
            str(c),
            str(d / "conditions.csv"),
            "-n",
            "10000000000000",
        ],
        1,
        "for each of 4 rows take",
    ),
    "predict-unconditional": (
        lambda d, m, c: ["predict", str(m), str(d / "conditions.csv")],
        1,
        "holds an unconditional model: predict is for models of p(y | X)",
    ),
    "predict-without-conditions": (
        lambda d, m, c: ["predict", str(c)],
        2,
        "the following arguments are required: conditions",
    ),
    "predict-zero-samples": (
        lambda d, m, c: ["predict", str(c), str(d / "conditions.csv"), "-n", "0"],
        1,
        "n_samples == 0",
    ),
}


@pytest.mark.parametrize("name", CONDITIONAL_BAD_COMMANDS)
def test_conditional_user_errors_print_one_line_and_exit_non_zero(
    pairs, model, conditional_model, name, capsys
):
    _, folder = pairs
    make_args, status, message = CONDITIONAL_BAD_COMMANDS[name]
    capsys.readouterr()
    try:
        returned = main(make_args(folder, model, conditional_model))
    except SystemExit as exit:  # argparse's own errors
        returned = exit.code
    stderr = capsys.readouterr().err
    assert returned == status
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
