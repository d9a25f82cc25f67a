"""The DONNA pipeline: data, teacher, blockwise distillation, NSR scoring, accuracy predictor, search, finetune."""

import os

# Idle OpenMP threads sleep instead of spinning. Set before torch loads: on a busy 2-core machine
# spinning threads made small training steps 4-100x slower (measured here); a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
