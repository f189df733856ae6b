"""qabench: train, compress and evaluate extractive QA models on SQuAD 2.0."""

import logging

__version__ = "0.1.0"

# torchao, imported by peft and by the inductor int8 backend, warns at import that it cannot load
# its CUDA-only kernels, and torch that torchao registers Enums the old way; neither concerns a run.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
