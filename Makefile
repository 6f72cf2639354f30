# The two set-up commands: `make demo` (serving install + a prediction on the bundled models)
# and `make test` (full install + the test suite; .ci/run calls it).
PYTHON ?= python3
VENV := .venv
SHARED ?= ../shared
CLIP := $(SHARED)/data/ravdess_speech_16k/Actor_21/03-01-03-02-01-01-21.wav

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip==25.3

demo: $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e .
	$(VENV)/bin/emorec predict --image $(SHARED)/samples/astronaut.png --audio $(CLIP)

test: $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get -qq update && apt-get -qq install -y chromium >/dev/null) || \
		echo "chromium not installed: the browser test will be skipped")
	$(VENV)/bin/python -m pytest -q

.PHONY: demo test
