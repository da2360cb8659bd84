#!/usr/bin/env bash
# Re-make the measurement cards of the real top-quark fit from the public ATLAS workspaces.
# Usage: bash configs/make_top_cards.sh [SHARED_DATA]   (default ../shared/data)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:-$here/../../shared/data}"
mkdir -p "$here/cards"
smeft-pyhf ingest "$data/atlas_top_schannel_13TeV/workspace.json" \
    --mapping atlas_schannel -o "$here/cards/atlas_schannel.card.yaml"
smeft-pyhf ingest "$data/atlas_top_ttZ_13TeV/3L_workspace.json" \
    --combine "$data/atlas_top_ttZ_13TeV/4L_workspace.json" \
    --mapping atlas_ttZ_3L4L -o "$here/cards/atlas_ttZ_3L4L.card.yaml"
