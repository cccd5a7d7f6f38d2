# castwatch: the `castwatch` command (worker, ingest, db migrate, ...) in a small image.
# Build:  docker build -t castwatch .      Run: deploy/compose.yaml, deploy/k8s/, docs/operations.md.
# Two stages: the build stage compiles what has no wheel; the runtime stage gets
# the virtual environment, ffmpeg (URL capture) and a non-root user whose Numba
# cache is compiled at build time, so a worker starts without compiling kernels.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/castwatch
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fingerprint ./fingerprint
COPY monitor ./monitor
RUN /opt/castwatch/bin/pip install .

FROM python:3.11.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/castwatch --create-home castwatch
COPY --from=build /opt/castwatch /opt/castwatch
ENV PATH=/opt/castwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/lib/castwatch/numba \
    CASTWATCH_CACHE_DIR=/var/lib/castwatch/cache \
    CASTWATCH_WEB_HOST=0.0.0.0
USER castwatch
WORKDIR /var/lib/castwatch
# Compile every Numba kernel once (resampler, spectrum, landmarks, hashes,
# index, matcher, and the live streams' lookup on common keys) into
# NUMBA_CACHE_DIR. The cache is for this CPU family:
# on another one Numba compiles again at start, into the same directory.
RUN python -c "import soundfile; from fingerprint.resample import StreamingResampler; from fingerprint.synth import music; x = music(40.0, 1, 16000); StreamingResampler(16000).feed(x); soundfile.write('/tmp/warm.wav', x, 16000)" \
    && python -m fingerprint index /tmp/warm-index /tmp/warm.wav --jobs 1 \
    && python -m fingerprint match /tmp/warm-index /tmp/warm.wav --json >/dev/null \
    && python -c "from fingerprint.audio import decode; from fingerprint.index import load; from fingerprint.landmarks import LIVE, extract; from fingerprint.matcher import Matcher; m = Matcher(load('/tmp/warm-index')); m.lookup_within(extract(decode('/tmp/warm.wav'), LIVE), m.index.track_ids[0])" \
    && rm -rf /tmp/warm.wav /tmp/warm-index
EXPOSE 6066
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:6066/livez', timeout=4).status != 200)"]
ENTRYPOINT ["castwatch"]
CMD ["worker"]
