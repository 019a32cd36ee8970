"""Where the files shipped inside the runtime package are: the embedded demo models, the sample
images the benchmark scores, and the demo's model card and held-out photos."""
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE / "models"
DEMO_MODEL = MODELS_DIR / "demo"
SAMPLES_DIR = HERE / "samples"
DEMO_ASSETS = HERE / "demo" / "assets"
DEMO_CARD = DEMO_ASSETS / "model_card.json"
