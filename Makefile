# The two commands of the README. Each creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data/tfds
WORKDIR ?= workdirs/quickstart

.PHONY: demo test venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Build the embedded dataset, train configs/quickstart.py, evaluate, write the report.
demo: venv
	$(PY) -m input_pipeline.build --dataset=embedded_faces --image_size=64 --data_dir=$(DATA_DIR)
	$(PY) -m fdeblur.main --config=configs/quickstart.py --workdir=$(WORKDIR) \
	  --config.dataset.data_dir=$(DATA_DIR)
	@echo "Report: $(abspath $(WORKDIR))/report.md (samples: $(abspath $(WORKDIR))/samples.png)"

test: venv
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) data workdirs
