"""Tests of tools/convert_checkpoint.py. Run with Debian's /usr/bin/python3 (python3-torch):

  /usr/bin/python3 tests/python/test_convert_checkpoint.py            # the unit tests
  /usr/bin/python3 tests/python/test_convert_checkpoint.py --make-inputs DIR

--make-inputs writes the checkpoints the C++ ConvertCheckpointTest converts and loads with
combo::load_state_dict (ordered.pth, wrapped.pth, one_entry.pth, d2.pkl); the C++ test rebuilds
the same values from the formulas in `reference_tensors` below.
"""
import collections
import contextlib
import io
import os
import pickle
import pickletools
import subprocess
import sys
import tempfile
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "convert_checkpoint.py")

try:
    import torch
except ImportError as e:  # pragma: no cover - reported as a skip
    torch = None
    TORCH_ERROR = str(e)

if torch is not None:
    sys.path.insert(0, os.path.dirname(TOOL))
    import convert_checkpoint as cc


def reference_tensors():
    """Values exact in every dtype; the C++ test uses the same formulas."""
    return collections.OrderedDict([
        ("backbone.layer.weight", torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25),
        ("backbone.layer.bias", torch.tensor([-1.0, 0.5, 3.0])),
        ("backbone.norm.running_var", torch.arange(3, dtype=torch.float64) + 0.5),
        ("backbone.step", torch.tensor(7, dtype=torch.int64)),
    ])


def reference_numpy():
    import numpy as np
    return collections.OrderedDict([
        ("patch_embed1.proj.weight", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 8),
        ("block1.0.norm1.bias", np.array([0.5, -0.5], dtype=np.float32)),
        ("head.weight", np.ones((2, 3), dtype=np.float32)),
    ])


def make_inputs(folder):
    torch.save(reference_tensors(), os.path.join(folder, "ordered.pth"))
    torch.save({"state_dict": reference_tensors(), "epoch": 3},
               os.path.join(folder, "wrapped.pth"))
    torch.save({"only": torch.arange(5, dtype=torch.float64) - 2},
               os.path.join(folder, "one_entry.pth"))
    with open(os.path.join(folder, "d2.pkl"), "wb") as f:
        pickle.dump({"model": reference_numpy(), "__author__": "PVT_V2_B5",
                     "matching_heuristics": True}, f)


def opcodes(path):
    with zipfile.ZipFile(path) as z:
        name = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        return [op.name for op, _, _ in pickletools.genops(z.read(name))]


def run_tool(*args):
    """Runs the tool's main() in this process (importing torch once keeps the tests fast);
    returns an object like subprocess.CompletedProcess. An unexpected exception propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cc.main(list(args))
        except SystemExit as e:  # argparse errors
            code = e.code
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@unittest.skipIf(torch is None, "torch is not importable: %s" % (None if torch else TORCH_ERROR))
class ConvertCheckpointTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        make_inputs(self.dir)

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def convert(self, src, *options):
        out = self.path("out.pt")
        r = run_tool(self.path(src), out, *options)
        self.assertEqual(r.returncode, 0, r.stderr)
        return torch.load(out), r

    def assertSameTensors(self, want, got):
        self.assertEqual(list(want), sorted(got, key=list(want).index))
        for k, v in want.items():
            self.assertEqual(v.dtype, got[k].dtype, k)
            self.assertTrue(torch.equal(v, got[k]), k)

    # --- the pickle stream

    def test_writes_no_single_item_opcodes_even_for_one_entry(self):
        for obj in ({"only": torch.zeros(2)}, {"a": {"b": torch.ones(1)}}, {"l": [torch.ones(1)]}):
            buf = io.BytesIO()
            torch.save(obj, buf, pickle_module=cc.PICKLE_MODULE)
            with open(self.path("x.pt"), "wb") as f:
                f.write(buf.getvalue())
            ops = opcodes(self.path("x.pt"))
            self.assertNotIn("SETITEM", ops)
            self.assertNotIn("APPEND", ops)
            self.assertIn("SETITEMS", ops)
            back = torch.load(self.path("x.pt"))
            self.assertEqual(repr(back), repr(obj))

    def test_torch_save_really_uses_our_pickler(self):
        # The stock pickler writes SETITEM for one entry; ours must not, through torch.save.
        torch.save({"only": torch.zeros(2)}, self.path("stock.pt"))
        self.assertIn("SETITEM", opcodes(self.path("stock.pt")))
        cc.save_flat({"only": torch.zeros(2)}, self.path("ours.pt"))
        self.assertNotIn("SETITEM", opcodes(self.path("ours.pt")))
        self.assertTrue(zipfile.is_zipfile(self.path("ours.pt")))

    # --- inputs

    def test_ordered_dict_pth(self):
        got, _ = self.convert("ordered.pth")
        self.assertIs(type(got), dict)
        self.assertSameTensors(reference_tensors(), got)
        self.assertNotIn("OrderedDict", repr(opcodes(self.path("out.pt"))))

    def test_state_dict_wrapper_and_prefix_strip(self):
        got, r = self.convert("wrapped.pth", "--strip", "backbone.", "--prefix", "model.")
        want = collections.OrderedDict(
            ("model." + k[len("backbone."):], v) for k, v in reference_tensors().items())
        self.assertSameTensors(want, got)

    def test_strip_is_repeatable_and_applied_in_order(self):
        got, _ = self.convert("ordered.pth", "--strip", "backbone.", "--strip", "layer.")
        self.assertIn("weight", got)
        self.assertIn("norm.running_var", got)

    def test_key_selects_nested_dict(self):
        torch.save({"ema": {"model": {"w": torch.ones(2), "b": torch.zeros(1)}}, "x": 1},
                   self.path("nested.pth"))
        got, _ = self.convert("nested.pth", "--key", "ema/model")
        self.assertEqual(sorted(got), ["b", "w"])

    def test_nested_dicts_are_flattened_with_dots(self):
        torch.save({"a": {"b": torch.ones(2), "c": {"d": torch.zeros(1)}}, "e": torch.ones(1)},
                   self.path("nested.pth"))
        got, _ = self.convert("nested.pth")
        self.assertEqual(sorted(got), ["a.b", "a.c.d", "e"])

    def test_detectron2_pkl_with_numpy_arrays(self):
        got, r = self.convert("d2.pkl", "--exclude", r"^head\.", "--prefix", "backbone.")
        want = collections.OrderedDict(
            ("backbone." + k, torch.from_numpy(v)) for k, v in reference_numpy().items()
            if not k.startswith("head."))
        self.assertSameTensors(want, got)

    def test_bare_numpy_dict_and_non_tensor_entries(self):
        d = dict(reference_numpy())
        d["__author__"] = "someone"
        with open(self.path("bare.pkl"), "wb") as f:
            pickle.dump(d, f, protocol=2)
        got, r = self.convert("bare.pkl")
        self.assertEqual(sorted(got), sorted(reference_numpy()))
        self.assertIn("__author__", r.stderr)

    def test_legacy_torch_save(self):
        torch.save(reference_tensors(), self.path("legacy.pth"),
                   _use_new_zipfile_serialization=False)
        got, _ = self.convert("legacy.pth")
        self.assertSameTensors(reference_tensors(), got)

    def test_views_and_parameters_are_saved_compactly(self):
        big = torch.arange(1000, dtype=torch.float32)
        torch.save({"view": big[10:14], "param": torch.nn.Parameter(torch.ones(3))},
                   self.path("views.pth"))
        got, _ = self.convert("views.pth")
        self.assertTrue(torch.equal(got["view"], big[10:14]))
        self.assertEqual(got["view"].storage().size(), 4)
        self.assertFalse(got["param"].requires_grad)
        self.assertIs(type(got["param"]), torch.Tensor)

    def test_caffe2_names(self):
        import numpy as np
        names = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.conv1.norm.weight",
                 "res_conv1_bn_b": "stem.conv1.norm.bias",
                 "res2_0_branch2a_w": "res2.0.conv1.weight",
                 "res2_0_branch2b_bn_s": "res2.0.conv2.norm.weight",
                 "res3_1_branch2c_bn_b": "res3.1.conv3.norm.bias",
                 "res2_0_branch1_w": "res2.0.shortcut.weight",
                 "res5_2_branch1_bn_s": "res5.2.shortcut.norm.weight",
                 "pred_w": "linear.weight"}
        d = {k: np.ones(2, dtype=np.float32) for k in names}
        d["res2_0_branch2a_w_momentum"] = np.ones(2, dtype=np.float32)
        with open(self.path("c2.pkl"), "wb") as f:
            pickle.dump(d, f)
        got, _ = self.convert("c2.pkl", "--caffe2-names")
        self.assertEqual(sorted(got), sorted(names.values()))
        _, r = self.convert("c2.pkl")
        self.assertIn("--caffe2-names", r.stderr)

    def test_list_prints_names_shapes_and_renames(self):
        r = run_tool(self.path("d2.pkl"), "--list", "--exclude", "^head", "--strip", "block1.")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("patch_embed1.proj.weight  [2, 3, 2, 2]  float32", r.stdout)
        self.assertIn("head.weight  [2, 3]  float32  (excluded)", r.stdout)
        self.assertIn("block1.0.norm1.bias  [2]  float32  -> 0.norm1.bias", r.stdout)
        self.assertFalse(os.path.exists(self.path("out.pt")))

    def test_numpy_is_not_needed_for_pth_files(self):
        code = ("import sys; sys.modules['numpy'] = None; sys.path.insert(0, %r); "
                "import convert_checkpoint as c; sys.exit(c.main([%r, %r]))" %
                (os.path.dirname(TOOL), self.path("ordered.pth"), self.path("out.pt")))
        r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        code = code.replace(self.path("ordered.pth"), self.path("d2.pkl"))
        r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("numpy", r.stderr)
        self.assertIn("d2.pkl", r.stderr)

    # --- errors

    def assertFails(self, *args, says=()):
        r = run_tool(*args)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        for s in says:
            self.assertIn(s, r.stderr)
        return r

    def test_command_line_runs(self):
        r = subprocess.run([sys.executable, TOOL, self.path("one_entry.pth"), self.path("o.pt")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wrote 1 tensors", r.stderr)
        r = subprocess.run([sys.executable, TOOL, self.path("absent.pth"), self.path("o2.pt")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("error: input file", r.stderr)
        self.assertNotIn("Traceback", r.stderr)

    def test_errors_are_clear(self):
        out = self.path("out.pt")
        self.assertFails(self.path("absent.pth"), out, says=("absent.pth", "does not exist"))
        with open(self.path("junk.pth"), "wb") as f:
            f.write(b"\x00\x01 definitely not a pickle")
        self.assertFails(self.path("junk.pth"), out, says=("junk.pth",))
        with open(self.path("empty.pth"), "wb"):
            pass
        self.assertFails(self.path("empty.pth"), out, says=("empty.pth", "empty"))
        self.assertFails(self.path("ordered.pth"), out, "--key", "model",
                         says=("no key 'model'", "backbone.step"))
        self.assertFails(self.path("ordered.pth"), out, "--exclude", ".",
                         says=("every tensor",))
        self.assertFails(self.path("ordered.pth"), out, "--strip", "backbone.layer.weight",
                         says=("empty name",))
        torch.save({"a.x": torch.ones(1), "b.x": torch.ones(1)}, self.path("clash.pth"))
        self.assertFails(self.path("clash.pth"), out, "--strip", "a.", "--strip", "b.",
                         says=("both become 'x'",))
        torch.save([torch.ones(1), torch.ones(2)], self.path("list.pth"))
        self.assertFails(self.path("list.pth"), out, says=("list", "expected a dict"))
        self.assertFails(self.path("ordered.pth"), self.path("no/such/dir/out.pt"),
                         says=("does not exist",))
        self.assertFails(self.path("ordered.pth"), out, "--exclude", "(",
                         says=("bad --exclude pattern",))
        self.assertFails(self.path("ordered.pth"), says=("output path is required",))
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-inputs":
        if torch is None:
            sys.exit("torch is not importable: " + TORCH_ERROR)
        make_inputs(sys.argv[2])
        sys.exit(0)
    unittest.main()
