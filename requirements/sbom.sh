#!/bin/sh
# The `sbom-build` stage of both images: the CycloneDX JSON SBOM of /opt/venv, written to
# /sbom/$1 by cyclonedx-py from a venv of its own that the image never carries (installed from
# sbom.lock beside this script, hash-checked). `make sbom` builds the `sbom` target and copies
# the file out.
set -eu
here=$(dirname "$0")
python -m venv /opt/sbom-tool
/opt/sbom-tool/bin/pip install --require-hashes -r "$here/sbom.lock"
mkdir -p /sbom
/opt/sbom-tool/bin/cyclonedx-py environment --output-reproducible -o "/sbom/$1" /opt/venv/bin/python
