#!/usr/bin/env bash
# Re-make the measurement cards of the real top-quark fit from the public ATLAS workspaces.
# Usage: bash configs/make_top_cards.sh [SHARED_DATA]   (default ../shared/data)
# The cards' stat and categories split each POI's variance by source (they add up in quadrature
# to the total); the stat convention comes from the mapping (s-channel: all-fixed, the paper's).
# Plots are left out here (--no-plots); drop that flag to get them beside the cards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:-$here/../../shared/data}"
mkdir -p "$here/cards"
smeft-pyhf ingest "$data/atlas_top_schannel_13TeV/workspace.json" \
    --mapping atlas_schannel -o "$here/cards/atlas_schannel.card.yaml" --no-plots
smeft-pyhf ingest "$data/atlas_top_ttZ_13TeV/3L_workspace.json" \
    --combine "$data/atlas_top_ttZ_13TeV/4L_workspace.json" \
    --mapping atlas_ttZ_3L4L -o "$here/cards/atlas_ttZ_3L4L.card.yaml" --no-plots
# ttbar l+jets (no SMEFiT dataset replaced: its prediction is the CMS inclusive table, see the
# mapping); configs/top_quark_fit.yaml does not list this card
smeft-pyhf ingest "$data/atlas_top_ttbar_lj_13TeV/workspace.json" \
    --mapping atlas_ttbar_lj -o "$here/cards/atlas_ttbar_lj.card.yaml" --no-plots
