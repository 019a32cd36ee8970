"""runtime/ works where torch, open_clip and the other gamma-edge packages cannot be imported."""
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2

from runtime_fixtures import make_model, textured_image

REPO = Path(__file__).resolve().parents[1]

PROGRAM = textwrap.dedent("""
    import sys

    BLOCKED = ("torch", "open_clip", "gamma_edge", "export", "training", "torchvision")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import importlib
    import pkgutil

    import runtime
    from runtime.commands.run import run_command
    from runtime.commands.score import score_command
    heavy = [m for m in ("onnxruntime", "openvino") if m in sys.modules]
    assert not heavy, f"import runtime pulled in {heavy}"
    import contract
    for package in (runtime, contract):         # every runtime and contract module imports without them
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)

    model, image, video = sys.argv[1:4]
    onnx_score = runtime.Scorer(model).score(image)
    openvino_score = runtime.Scorer(model, backend="openvino").score(image)
    rows = list(runtime.Scorer(model).score_many([image, image]))

    from runtime.live.runner import RunOptions, StreamRunner
    from runtime.live.source import parse_source
    summary = StreamRunner(runtime.Scorer(model, crops="center"), parse_source(video), RunOptions()).run()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(onnx_score, openvino_score, rows[1].score, summary.scored)
""")


def test_runtime_scores_without_torch(tmp_path):
    from runtime_fixtures import write_video

    model = make_model(tmp_path / "m")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), textured_image(300, 400))
    video = write_video(tmp_path / "v.avi", frames=3)
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(model), str(image), str(video)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    onnx_score, openvino_score, many_score, scored = done.stdout.split()
    assert abs(float(onnx_score) - float(openvino_score)) < 1e-5 and float(many_score) == float(onnx_score)
    assert int(scored) == 3
