# The two README commands: `make demo` and `make test`. Both run the setup step first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench corpus docs clean

setup:
	@scripts/setup.sh

# The main job on the embedded default: the committed sample corpus -> feature store -> the tiny
# acoustic model and the tiny vocoder (Ray Train + DeepSpeed on a local in-process Ray) -> a
# sentence spoken through the vocoder (and through Griffin-Lim, to compare), the test split
# synthesised and measured (out/sample-eval/report.html); the code-switched Malay/English corpus
# (per-word languages, particles, augmentation) -> the tiny model with the curriculum and heads ->
# a mixed sentence; then voxray's mel codec fitted and applied, the tiny talker trained on its
# codes, and the sentence spoken by it.
# Re-running resumes the runs in out/ (already finished: they only export again).
demo: setup
	$(BIN)/voxray preprocess --input corpus/sample --output out/sample-store preprocess.overwrite=true
	$(BIN)/voxray train acoustic --data out/sample-store --output out/sample-run --config jobs/configs/acoustic-cpu.yaml
	$(BIN)/voxray train vocoder --data out/sample-store --output out/sample-vocoder --config jobs/configs/vocoder-cpu.yaml
	$(BIN)/voxray synthesize --model out/sample-run/final --text "Hello from voxray." --speaker spk_f --language en-us --out out/hello-griffin-lim.wav
	$(BIN)/voxray synthesize --model out/sample-run/final --vocoder out/sample-vocoder/final --text "Hello from voxray." --speaker spk_f --language en-us --out out/hello.wav
	$(BIN)/voxray evaluate --model out/sample-run/final --vocoder out/sample-vocoder/final --data out/sample-store --output out/sample-eval --overwrite
	$(BIN)/voxray preprocess --input corpus/codeswitch --output out/cs-store preprocess.overwrite=true preprocess.code_switch=ms,en preprocess.augment.copies=1
	$(BIN)/voxray train acoustic --data out/cs-store --output out/cs-run --config jobs/configs/acoustic-ms-cpu.yaml
	$(BIN)/voxray synthesize --model out/cs-run/final --vocoder out/sample-vocoder/final --text "Jom kita makan lunch dulu lah." --speaker spk_f --language ms --out out/hello-codeswitch.wav
	test -e out/sample-codec/codec.json || $(BIN)/voxray codec fit --data out/sample-store --output out/sample-codec codec.n_codebooks=4 codec.codebook_size=64 codec.fit_steps=100
	$(BIN)/voxray codec encode --codec out/sample-codec --data out/sample-store --output out/sample-codes --overwrite
	$(BIN)/voxray train talker --data out/sample-codes --output out/sample-talker --config jobs/configs/talker-cpu.yaml
	$(BIN)/voxray synthesize --model out/sample-talker/final --vocoder out/sample-vocoder/final --text "Hello from voxray." --speaker spk_f --language en-us --seed 0 --out out/hello-talker.wav

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/preprocess.py
	$(BIN)/python benchmarks/train_acoustic.py
	$(BIN)/python benchmarks/train_vocoder.py
	$(BIN)/python benchmarks/train_talker.py

# Regenerate docs/config.md from the config schema (tests/test_docs.py fails when it is stale).
docs: setup
	$(BIN)/python -c "from voxray.config.loading import reference_markdown; open('docs/config.md', 'w').write(reference_markdown())"

# Regenerate the committed sample corpora (needs espeak-ng; output is byte-for-byte reproducible).
corpus: setup
	$(BIN)/python scripts/make_sample_corpus.py corpus/sample
	$(BIN)/python scripts/make_codeswitch_corpus.py corpus/codeswitch

clean:
	rm -rf out .pytest_cache
