# The book's two commands:  `make book` (everything, then the HTML)  and  `make test`.
# Both start with `setup`, which is idempotent: a second run takes seconds.
PYTHON  ?= python3
PROFILE ?= ci
export OMP_NUM_THREADS ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: book test setup python-deps cmdstan chromium chapters html test-unit clean

book: setup            ## install, build CmdStan, execute every chapter, render _build/html
	$(PYTHON) -m pulse_lib.runner book --profile $(PROFILE)

test: setup            ## the whole test suite: unit tests, every chapter, the book build, the browser check
	$(PYTHON) -m pytest -ra

test-unit:             ## the library's unit tests only (no chapters, no book build)
	$(PYTHON) -m pytest -ra -m "not book"

setup: python-deps cmdstan chromium

python-deps:
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -r requirements/ci.txt -e ".[book,test,serve,scale]"
	@# obp (Open Bandit Pipeline, Part V) pins torch 1.12 and Python < 3.11 in its metadata but
	@# runs on this stack; install it without its pins (see requirements/ci.txt).
	$(PYTHON) -m pip install -q --no-deps --ignore-requires-python obp==0.5.7

cmdstan:
	$(PYTHON) -m pulse_lib.stan install

chromium:              ## Debian's Chromium, for the test that opens the rendered book
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (for the browser test) ..."; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

chapters:              ## e.g. make chapters CHAPTERS="01 02" PROFILE=full
	$(PYTHON) -m pulse_lib.runner run $(CHAPTERS) --profile $(PROFILE)

html:
	$(PYTHON) -m pulse_lib.runner build

clean:
	rm -rf _build datasets/generated
