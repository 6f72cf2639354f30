# The two set-up commands: `make demo` (serving install + a prediction on the bundled models)
# and `make test` (full install + the test suite; .ci/run calls it). `make reports` reruns
# calibration and every evaluation whose figures the README and the model cards quote.
PYTHON ?= python3
VENV := .venv
SHARED ?= ../shared
FER := $(SHARED)/data/fer2013
RAVDESS := $(SHARED)/data/ravdess_speech_16k
NEMO := $(SHARED)/data/nemo_pl
CLIP := $(RAVDESS)/Actor_21/03-01-03-02-01-01-21.wav
EMOREC := $(VENV)/bin/emorec

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

# Temperatures and fusion rule (validation), then the reports written next to each model:
# faces on PublicTest and PrivateTest, the photo path's temperature and report on photos_wild,
# speech on actors 17-20 and 21-24 and nEMO's test speakers, fusion on the validation and test
# pseudo-pairs (with the certainty exponents compared).
reports: $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[train]'
	$(EMOREC) calibrate --faces $(FER) --speech $(RAVDESS)
	for split in public-test private-test; do $(EMOREC) evaluate face --data $(FER) --split $$split || exit 1; done
	$(EMOREC) evaluate face --data $(SHARED)/data/photos_wild --split photos-wild --calibrate
	$(EMOREC) evaluate face --data $(SHARED)/data/photos_wild --split photos-wild
	for data in $(RAVDESS) $(NEMO); do for split in validation test; do \
		$(EMOREC) evaluate speech --data $$data --split $$split || exit 1; \
		$(EMOREC) evaluate speech --model models/speech/speaker --data $$data --split $$split || exit 1; done; done
	for split in validation test; do for channel in mp3-32k aac-32k opus-24k telephone quiet-20db loud-10db; do \
		$(EMOREC) evaluate speech --data $(RAVDESS) --split $$split --channel $$channel || exit 1; done; done
	for pairs in models/fusion/pairs-validation-x10.csv models/fusion/pairs-test.csv; do \
		$(EMOREC) evaluate fusion --pairs $$pairs --crops --robustness || exit 1; done

.PHONY: demo test reports
