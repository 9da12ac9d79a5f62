"""What long jobs tell their user and what they keep: a summary line at the end of every run
(also when stderr is not a terminal), bad images skipped and counted by `stats` (or a stop with
`--strict`), and an unwritable output found before any work."""
import json
import os
import shutil
import subprocess

import model_prep
import parity_common as pc

BIN = pc.engine_binary()
SRC = pc.SRC
WEIGHTS = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
EXAMPLES = os.path.join(SRC, "assets", "default", "examples")
SCRATCH = pc.scratch_dir()


def run(*args):
    # capture_output: stderr is a pipe, not a terminal, as in a batch job's log.
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def assert_same_statistics(path_a, path_b):
    a, b = model_prep.read_safetensors(path_a), model_prep.read_safetensors(path_b)
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def image_tree(name, bad=True):
    """Two classes of the bundled examples; with bad, a truncated PNG in the second."""
    root = os.path.join(SCRATCH, name)
    shutil.rmtree(root, ignore_errors=True)
    for cls, files in (("a_circle", ["circle.png", "cross.png"]), ("b_ring", ["ring.png", "square.png"])):
        os.makedirs(os.path.join(root, cls))
        for f in files:
            shutil.copy(os.path.join(EXAMPLES, f), os.path.join(root, cls, f))
    if bad:
        with open(os.path.join(EXAMPLES, "star.png"), "rb") as f:
            head = f.read(200)
        with open(os.path.join(root, "b_ring", "truncated.png"), "wb") as f:
            f.write(head)
    return root


def test_saliency_ends_with_a_summary_line():
    out = os.path.join(SCRATCH, "sal")
    shutil.rmtree(out, ignore_errors=True)
    r = run("saliency", "--weights", WEIGHTS, "--out", out, EXAMPLES)
    assert r.returncode == 0, r.stderr
    last = lines(r.stderr)[-1]
    assert last.startswith("saliency: 6 images in ") and "images/s" in last and out in last, r.stderr


def test_saliency_summary_counts_skipped_inputs():
    out = os.path.join(SCRATCH, "sal_bad")
    shutil.rmtree(out, ignore_errors=True)
    tree = image_tree("sal_bad_tree")
    r = run("saliency", "--weights", WEIGHTS, "--out", out, os.path.join(tree, "a_circle", "circle.png"),
            os.path.join(tree, "b_ring", "truncated.png"))
    assert r.returncode == 1
    assert any(ln.startswith("saliency: 1 image, 1 skipped in ") for ln in lines(r.stderr)), r.stderr
    assert os.path.exists(os.path.join(out, "circle.npy"))


def test_stats_skips_and_counts_an_unreadable_image():
    tree = image_tree("stats_bad_tree")
    out = os.path.join(SCRATCH, "skip.safetensors")
    if os.path.exists(out):
        os.remove(out)
    r = run("stats", "--weights", WEIGHTS, "--data", tree, "--out", out, "--batch", "2")
    assert r.returncode == 0, r.stderr
    ls = lines(r.stderr)
    assert any(ln.startswith("parchgrad: skipped: ") and "truncated.png" in ln for ln in ls), r.stderr
    assert ls[-1].startswith("stats: 4 images, 1 skipped in ") and out in ls[-1], r.stderr
    assert os.path.exists(out)
    # The same tree without the bad file gives the same statistics, bit for bit.
    clean = image_tree("stats_clean_tree", bad=False)
    out2 = os.path.join(SCRATCH, "clean.safetensors")
    r2 = run("stats", "--weights", WEIGHTS, "--data", clean, "--out", out2, "--batch", "2")
    assert r2.returncode == 0, r2.stderr
    assert_same_statistics(out, out2)


def test_stats_strict_stops_at_an_unreadable_image():
    tree = image_tree("stats_strict_tree")
    out = os.path.join(SCRATCH, "strict.safetensors")
    if os.path.exists(out):
        os.remove(out)
    r = run("stats", "--weights", WEIGHTS, "--data", tree, "--out", out, "--strict")
    assert r.returncode != 0
    ls = lines(r.stderr)
    assert len(ls) == 1 and ls[0].startswith("parchgrad: error: ") and "truncated.png" in ls[0], r.stderr
    assert not os.path.exists(out)


def test_stats_refuses_an_unwritable_output_before_any_work():
    tree = image_tree("stats_out_tree", bad=False)
    for out, says in ((os.path.join(SCRATCH, "no_such_dir", "s.safetensors"), "does not exist"),
                      (SCRATCH, "names a folder")):
        r = run("stats", "--weights", WEIGHTS, "--data", tree, "--out", out)
        ls = lines(r.stderr)
        assert r.returncode != 0 and len(ls) == 1 and says in ls[0] and "--out" in ls[0], r.stderr


def records(folder):
    with open(os.path.join(folder, "results.jsonl")) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def test_a_second_run_into_one_folder_replaces_the_index_entries_it_rewrites():
    out = os.path.join(SCRATCH, "twice")
    shutil.rmtree(out, ignore_errors=True)
    for target in (0, 1):
        r = run("saliency", "--weights", WEIGHTS, "--out", out, "--target", target, EXAMPLES)
        assert r.returncode == 0, r.stderr
    recs = records(out)
    maps = [o["map"] for rec in recs for o in rec["outputs"]]
    assert len(recs) == 6 and len(set(maps)) == 6, recs
    assert all(rec["target"] == 1 for rec in recs)
    assert "6 entries of an earlier run replaced" in lines(r.stderr)[-1], r.stderr
    # One more image: its line replaces one; the other five stay.
    r = run("saliency", "--weights", WEIGHTS, "--out", out, "--target", 2, os.path.join(EXAMPLES, "circle.png"))
    assert r.returncode == 0, r.stderr
    recs = records(out)
    assert len(recs) == 6 and sorted(rec["target"] for rec in recs) == [1, 1, 1, 1, 1, 2]
    # A partial last line left by a killed run is dropped, not glued to the next run's first.
    with open(os.path.join(out, "results.jsonl"), "a") as f:
        f.write('{"input": "killed", "outp')
    r = run("saliency", "--weights", WEIGHTS, "--out", out, "--target", 2, os.path.join(EXAMPLES, "cross.png"))
    assert r.returncode == 0, r.stderr
    recs = records(out)
    assert len(recs) == 6 and sorted(rec["target"] for rec in recs) == [1, 1, 1, 1, 2, 2]


def test_a_foreign_results_file_is_refused_before_any_work():
    out = os.path.join(SCRATCH, "foreign")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        f.write("not a record\n")
    r = run("saliency", "--weights", WEIGHTS, "--out", out, EXAMPLES)
    ls = lines(r.stderr)
    assert r.returncode != 0 and len(ls) == 1 and "results.jsonl: line 1" in ls[0], r.stderr
    assert sorted(os.listdir(out)) == ["results.jsonl"]


def test_unwritable_outputs_fail_before_work_and_leave_nothing():
    x = os.path.join(SCRATCH, "x.npy")
    r = run("preprocess", os.path.join(EXAMPLES, "circle.png"), "--out", x)
    assert r.returncode == 0, r.stderr
    missing = os.path.join(SCRATCH, "no_such_dir")
    logits = os.path.join(SCRATCH, "logits.npy")
    if os.path.exists(logits):
        os.remove(logits)
    cases = [
        (["gradient", "--weights", WEIGHTS, "--input", x, "--logits-out", logits,
          "--grad-out", os.path.join(missing, "g.npy")], "--grad-out"),
        (["preprocess", os.path.join(EXAMPLES, "circle.png"), "--out", os.path.join(missing, "p.npy")], "--out"),
        (["convert", WEIGHTS, SCRATCH], "names a folder"),
    ]
    for args, says in cases:
        r = run(*args)
        ls = lines(r.stderr)
        assert r.returncode != 0 and len(ls) == 1 and says in ls[0], (args, r.stderr)
    assert not os.path.exists(logits)  # gradient left no logits behind


def test_command_line_usage_errors():
    r = run()
    assert r.returncode == 0 and "saliency" in r.stdout and "Usage: parchgrad" in r.stdout, r.stdout
    r = run("frobnicate")
    ls = lines(r.stderr)
    assert r.returncode == 2 and len(ls) == 1 and "unknown command 'frobnicate'" in ls[0] and "saliency" in ls[0]
    r = run("saliency", "--out", os.path.join(SCRATCH, "usage"), EXAMPLES)
    ls = lines(r.stderr)
    assert r.returncode == 2 and len(ls) == 1 and ls[0].startswith("parchgrad: error: --weights is required"), r.stderr


def test_options_that_would_do_nothing_or_make_no_sense_are_refused():
    stats = os.path.join(SRC, "assets", "default", "stats.safetensors")
    out = os.path.join(SCRATCH, "noop")
    for extra, says in ((["--sg-sigma", "nan", "--method", "smoothgrad"], "--sg-sigma: 'nan' is not a finite number"),
                        (["--stats", stats], "does nothing here"),
                        (["--compare", "grad,ig", "--method", "ig"], "do nothing with --compare"),
                        (["--compare", ""], "--compare: empty list")):
        r = run("saliency", "--weights", WEIGHTS, "--out", out, *extra, EXAMPLES)
        ls = lines(r.stderr)
        assert r.returncode != 0 and len(ls) == 1 and says in ls[0], (extra, r.stderr)
        assert not os.path.exists(out) or not os.listdir(out)


def test_saliency_walks_a_tree_and_keeps_its_relative_paths():
    tree = image_tree("walk_tree", bad=False)
    os.makedirs(os.path.join(tree, "a_circle", "deeper"))
    shutil.copy(os.path.join(EXAMPLES, "star.png"), os.path.join(tree, "a_circle", "deeper", "star.png"))
    os.symlink(os.path.join(tree, "missing.png"), os.path.join(tree, "b_ring", "gone.png"))
    out = os.path.join(SCRATCH, "walk_out")
    shutil.rmtree(out, ignore_errors=True)
    r = run("saliency", "--weights", WEIGHTS, "--out", out, tree)
    assert r.returncode == 1, r.stderr
    ls = lines(r.stderr)
    assert any("gone.png: dangling symbolic link" in ln for ln in ls), r.stderr
    got = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs if f.endswith(".npy"))
    assert got == ["a_circle/circle.npy", "a_circle/cross.npy", "a_circle/deeper/star.npy",
                   "b_ring/ring.npy", "b_ring/square.npy"], got


def test_eval_resumes_however_the_paths_are_spelled():
    work = os.path.join(SCRATCH, "eval_resume")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    weights_copy = os.path.join(work, "copy.pth")
    shutil.copy(WEIGHTS, weights_copy)
    out = os.path.join(work, "report")
    common = ["--methods", "grad", "--auc-steps", "3", "--out", out]
    r = run("eval", "--weights", WEIGHTS, "--data", EXAMPLES, "--limit", "2", *common)
    assert r.returncode == 0, r.stderr
    # Another spelling of the data folder (relative, from another working directory, trailing
    # slash) and another path to the same weights: the same job, resumed.
    rel = os.path.relpath(EXAMPLES, work) + "/"
    r = subprocess.run([BIN, "eval", "--weights", "copy.pth", "--data", rel, *common], capture_output=True, text=True,
                       timeout=600, cwd=work, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    assert "resuming: 2 of 6 images done" in r.stderr, r.stderr
    with open(out + ".jsonl") as f:
        assert len([ln for ln in f if ln.strip()]) == 6
    assert lines(r.stderr)[-1].startswith("eval: 6 images in "), r.stderr
    # Other weights (other bytes) are another job: refused.
    other = os.path.join(work, "other.safetensors")
    r = run("convert", WEIGHTS, other)
    assert r.returncode == 0, r.stderr
    r = run("eval", "--weights", other, "--data", EXAMPLES, *common)
    assert r.returncode == 1 and "other settings" in r.stderr, r.stderr


def test_target_by_class_name():
    out = os.path.join(SCRATCH, "by_name")
    shutil.rmtree(out, ignore_errors=True)
    r = run("saliency", "--weights", WEIGHTS, "--out", out, "--target", "Star,ring", os.path.join(EXAMPLES, "star.png"))
    ls = lines(r.stderr)  # a list for one image means nothing without --all-targets
    assert r.returncode == 1 and len(ls) == 1 and "--all-targets" in ls[0], r.stderr
    r = run("saliency", "--weights", WEIGHTS, "--out", out, "--target", "Star,ring", "--all-targets",
            os.path.join(EXAMPLES, "star.png"))
    assert r.returncode == 0, r.stderr
    assert sorted(rec["target"] for rec in records(out)) == [2, 4]  # classes.txt: ring is 2, star is 4
    r = run("saliency", "--weights", WEIGHTS, "--out", out, "--target", "tabby", os.path.join(EXAMPLES, "star.png"))
    ls = lines(r.stderr)
    assert r.returncode == 1 and len(ls) == 1 and "'tabby' is not a class id, a class name of this model" in ls[0]


def test_every_writing_command_takes_dash_o():
    out = os.path.join(SCRATCH, "dash_o")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    r = run("convert", WEIGHTS, "-o", os.path.join(out, "w.safetensors"))
    assert r.returncode == 0 and os.path.exists(os.path.join(out, "w.safetensors")), r.stderr
    r = run("saliency", "--weights", WEIGHTS, "-o", os.path.join(out, "maps"), os.path.join(EXAMPLES, "star.png"))
    assert r.returncode == 0 and os.path.exists(os.path.join(out, "maps", "star.npy")), r.stderr
    r = run("preprocess", os.path.join(EXAMPLES, "star.png"), "-o", os.path.join(out, "x.npy"))
    assert r.returncode == 0 and os.path.exists(os.path.join(out, "x.npy")), r.stderr


def test_an_imagenet_model_needs_folders_that_say_their_class(tmp_path):
    import torch
    import torchvision
    weights = str(tmp_path / "r18.pth")
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), weights)
    for folders, says in ((["cat", "dog"], "'cat' is neither a WordNet id nor an ImageNet class name"),
                          (["n01440764", "n01443537"], "not all 1000 of ImageNet")):
        root = tmp_path / ("tree_" + folders[0])
        for f in folders:
            (root / f).mkdir(parents=True)
            shutil.copy(os.path.join(EXAMPLES, "star.png"), root / f / "a.png")
        r = run("stats", "--weights", weights, "--data", root, "--out", tmp_path / "s.safetensors")
        ls = lines(r.stderr)
        assert r.returncode == 1 and len(ls) == 1 and says in ls[0] and "--labels" in ls[0], r.stderr


def test_stats_resumes_from_its_checkpoints_and_equals_one_run():
    # A run stopped by a bad last image (--strict) leaves its checkpoints; once the image is
    # readable the run resumes from them and writes the same file as one uninterrupted run.
    tree = image_tree("ckpt_tree")
    out = os.path.join(SCRATCH, "ckpt.safetensors")
    if os.path.exists(out):
        os.remove(out)
    for f in os.listdir(SCRATCH):
        if f.startswith("ckpt.safetensors.part-"):
            os.remove(os.path.join(SCRATCH, f))
    args = ["stats", "--weights", WEIGHTS, "--data", tree, "--out", out, "--batch", "1", "--checkpoint", "1"]
    r = run(*args, "--strict")
    assert r.returncode == 1 and not os.path.exists(out), r.stderr
    parts = [f for f in os.listdir(SCRATCH) if f.startswith("ckpt.safetensors.part-")]
    assert len(parts) == 4, parts
    shutil.copy(os.path.join(EXAMPLES, "star.png"), os.path.join(tree, "b_ring", "truncated.png"))
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming: 4 of 5 images done" in r.stderr, r.stderr
    assert not [f for f in os.listdir(SCRATCH) if f.startswith("ckpt.safetensors.part-")]
    whole = os.path.join(SCRATCH, "ckpt_whole.safetensors")
    r = run("stats", "--weights", WEIGHTS, "--data", tree, "--out", whole, "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert_same_statistics(out, whole)
    # Another job's checkpoint beside the output is refused, not used or deleted.
    stray = out + ".part-0123456789abcdef-000000.pgpart"
    open(stray, "wb").close()
    r = run(*args)
    ls = lines(r.stderr)
    assert r.returncode == 1 and len(ls) == 1 and "is a checkpoint of another" in ls[0], r.stderr
    r = run(*args, "--no-resume")
    assert r.returncode == 0 and not os.path.exists(stray), r.stderr


# ---- saliency resumes: an interrupted run and its rerun write what one run writes ----

def saliency_in(cwd, *args, weights=WEIGHTS):
    """saliency from the folder cwd into its "out": two runs in two folders give the same bytes."""
    os.makedirs(cwd, exist_ok=True)
    return subprocess.run([BIN, "saliency", "--weights", weights, "--out", "out", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def folder_bytes(folder):
    got = {}
    for d, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                got[os.path.relpath(os.path.join(d, f), folder)] = fh.read()
    return got


def resume_inputs(name):
    """Four inputs: circle.png, a copy in another folder (its outputs named ..._2), a .npy of two samples,
    ring.png."""
    import numpy as np
    root = os.path.join(SCRATCH, name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "other"))
    shutil.copy(os.path.join(EXAMPLES, "circle.png"), os.path.join(root, "other", "circle.png"))
    np.save(os.path.join(root, "two.npy"), np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32))
    return [os.path.join(EXAMPLES, "circle.png"), os.path.join(root, "other", "circle.png"),
            os.path.join(root, "two.npy"), os.path.join(EXAMPLES, "ring.png")]


def summary(r):
    return lines(r.stderr)[-1]


def test_saliency_resumes_a_killed_run_and_writes_what_one_run_writes():
    inputs = resume_inputs("resume_in")
    whole, killed = os.path.join(SCRATCH, "resume_whole"), os.path.join(SCRATCH, "resume_killed")
    for d in (whole, killed):
        shutil.rmtree(d, ignore_errors=True)
    args = ["--target", "top2", "--batch", 3, *inputs]  # two records per sample: 10 in all
    r = saliency_in(whole, *args)
    assert r.returncode == 0, r.stderr
    assert summary(r).startswith("saliency: 4 images in "), r.stderr
    # A run killed in the .npy's records: 5 lines and a partial one, one file of circle_2 not
    # yet written (its line written first, as a kill between a map and its line cannot do: a
    # listed file that is missing is redone all the same).
    shutil.copytree(whole, killed)
    index = os.path.join(killed, "out", "results.jsonl")
    with open(index) as f:
        recs = f.read().splitlines()
    assert len(recs) == 10
    with open(index, "w") as f:
        f.write("\n".join(recs[:5]) + "\n" + recs[5][:40])
    circle_2 = json.loads(recs[3])
    assert circle_2["input"] == inputs[1] and circle_2["outputs"][0]["map"].endswith("_2.npy"), circle_2
    os.remove(os.path.join(killed, circle_2["outputs"][0]["overlay"]))
    r = saliency_in(killed, *args)
    assert r.returncode == 0, r.stderr
    assert summary(r).startswith("saliency: 3 images, 1 resumed in "), r.stderr
    assert folder_bytes(os.path.join(killed, "out")) == folder_bytes(os.path.join(whole, "out"))
    # Run again: everything resumed, no map or overlay written (the index is rewritten, the same).
    before = {f: os.stat(os.path.join(killed, "out", f)).st_mtime_ns for f in os.listdir(os.path.join(killed, "out"))
              if f != "results.jsonl"}
    r = saliency_in(killed, *args)
    assert r.returncode == 0 and summary(r).startswith("saliency: 0 images, 4 resumed in "), r.stderr
    assert before == {f: os.stat(os.path.join(killed, "out", f)).st_mtime_ns for f in before}
    assert folder_bytes(os.path.join(killed, "out")) == folder_bytes(os.path.join(whole, "out"))


def test_saliency_recomputes_what_changed_and_resumes_the_rest():
    inputs = resume_inputs("changed_in")
    work, fresh = os.path.join(SCRATCH, "changed_work"), os.path.join(SCRATCH, "changed_fresh")
    for d in (work, fresh):
        shutil.rmtree(d, ignore_errors=True)
    r = saliency_in(work, *inputs)
    assert r.returncode == 0 and summary(r).startswith("saliency: 4 images in "), r.stderr
    # Other bytes under the same name and modification time: that input is explained again.
    changed = inputs[1]
    stamp = os.stat(changed)
    shutil.copy(os.path.join(EXAMPLES, "star.png"), changed)
    os.utime(changed, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    r = saliency_in(work, *inputs)
    assert r.returncode == 0 and summary(r).startswith("saliency: 1 image, 3 resumed in "), r.stderr
    r = saliency_in(fresh, *inputs)
    assert r.returncode == 0, r.stderr
    assert folder_bytes(os.path.join(work, "out")) == folder_bytes(os.path.join(fresh, "out"))
    # Other settings (another colour map; other statistics bytes for ParchGrad): nothing resumed,
    # every entry replaced.
    r = saliency_in(work, "--colormap", "jet", *inputs)
    assert r.returncode == 0 and summary(r).startswith("saliency: 4 images in "), r.stderr
    assert "5 entries of an earlier run replaced" in summary(r), r.stderr
    # Weights of other bytes under the same path (the same tensors, as safetensors): explained again.
    weights = os.path.join(SCRATCH, "changed_weights.pth")
    shutil.copy(WEIGHTS, weights)
    for expect in ("1 image in ", "0 images, 1 resumed in "):
        r = saliency_in(work, inputs[0], weights=weights)
        assert r.returncode == 0 and summary(r).startswith("saliency: " + expect), r.stderr
    assert run("convert", WEIGHTS, weights + ".safetensors").returncode == 0
    os.replace(weights + ".safetensors", weights)
    r = saliency_in(work, inputs[0], weights=weights)
    assert r.returncode == 0 and summary(r).startswith("saliency: 1 image in "), r.stderr
    # --no-resume: explained again, the same bytes.
    r = saliency_in(work, "--no-resume", *inputs)
    assert r.returncode == 0 and summary(r).startswith("saliency: 4 images in "), r.stderr
    assert folder_bytes(os.path.join(work, "out")) == folder_bytes(os.path.join(fresh, "out"))
    # An index an older version wrote (no settings_id, no input_hash) is never resumed.
    index = os.path.join(work, "out", "results.jsonl")
    with open(index) as f:
        recs = [json.loads(ln) for ln in f]
    with open(index, "w") as f:
        for rec in recs:
            rec.pop("settings_id")
            f.write(json.dumps(rec) + "\n")
    r = saliency_in(work, *inputs)
    assert r.returncode == 0 and summary(r).startswith("saliency: 4 images in "), r.stderr
    assert folder_bytes(os.path.join(work, "out")) == folder_bytes(os.path.join(fresh, "out"))


def test_a_killed_shard_is_rerun_alone_and_the_merge_writes_what_one_run_writes():
    npy = resume_inputs("shard_in")[2]  # (two inputs of one name would be refused by the merge)
    inputs = [os.path.join(EXAMPLES, "circle.png"), os.path.join(EXAMPLES, "ring.png"),
              os.path.join(EXAMPLES, "square.png"), npy]
    whole, sharded = os.path.join(SCRATCH, "shard_whole"), os.path.join(SCRATCH, "shard_sharded")
    for d in (whole, sharded):
        shutil.rmtree(d, ignore_errors=True)
    assert saliency_in(whole, *inputs).returncode == 0

    def merge(cwd):
        return subprocess.run([BIN, "merge-results", "out"], capture_output=True, text=True, timeout=600, cwd=cwd)

    # Shard 1/2 (ring and the .npy) killed in the .npy: one line and a partial one, no
    # manifest. Run again alone, it resumes; merged with shard 0/2, the folder is one run's.
    r = saliency_in(sharded, "--shard", "1/2", *inputs)
    assert r.returncode == 0, r.stderr
    shard_index = os.path.join(sharded, "out", "results-1-of-2.jsonl")
    with open(shard_index) as f:
        recs = f.read().splitlines()
    assert len(recs) == 3
    with open(shard_index, "w") as f:
        f.write(recs[0] + "\n" + recs[1][:30])
    os.remove(os.path.join(sharded, "out", "results-1-of-2.json"))
    r = saliency_in(sharded, "--shard", "1/2", *inputs)
    assert r.returncode == 0 and summary(r).startswith("saliency 1/2: 1 image, 1 resumed in "), r.stderr
    assert saliency_in(sharded, "--shard", "0/2", *inputs).returncode == 0
    assert merge(sharded).returncode == 0
    got = folder_bytes(os.path.join(sharded, "out"))
    assert {k: v for k, v in got.items() if not k.startswith("results-")} == folder_bytes(os.path.join(whole, "out"))
    # Shards run into the folder of a finished run resume from its results.jsonl (copying their
    # records into their own index); the merge leaves the index as it was.
    for i, done in ((0, "2 resumed"), (1, "2 resumed")):
        r = saliency_in(whole, "--shard", f"{i}/2", *inputs)
        assert r.returncode == 0 and summary(r).startswith(f"saliency {i}/2: 0 images, {done} in "), r.stderr
    with open(os.path.join(whole, "out", "results.jsonl"), "rb") as f:
        before = f.read()
    assert merge(whole).returncode == 0
    with open(os.path.join(whole, "out", "results.jsonl"), "rb") as f:
        assert f.read() == before


def test_eval_takes_a_named_ig_baseline():
    # blurred (like zero and black) names a baseline, not a file: eval's resume identity must not
    # try to read it.
    out = os.path.join(SCRATCH, "eval_blurred", "report")
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    r = run("eval", "--weights", WEIGHTS, "--data", EXAMPLES, "--limit", "1", "--methods", "ig", "--ig-baseline",
            "blurred", "--ig-steps", "2", "--auc-steps", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    assert lines(r.stderr)[-1].startswith("eval: 1 image"), r.stderr
