# Sourced by peer_copy_paste.sh and peer_unimatch.sh: the virtual environment their official scripts run
# in (PEERS_VENV, default ~/.cache/mona-peers), with the packages of all three (a CPU torch pinned as
# ours); made once, and marked complete only when every install succeeded.
PV=${PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mona-peers}
if [ ! -f "$PV/.complete" ]; then
  python3 -m venv "$PV" >/dev/null
  { "$PV/bin/pip" install -q torch==2.13.0 \
      && "$PV/bin/pip" install -q opencv-python-headless tensorboardX tensorboard medpy h5py scipy matplotlib \
         pillow tqdm scikit-image imageio einops pyyaml; } >"$PV/install.log" 2>&1 \
    || { echo "peer venv install failed: $(tail -1 "$PV/install.log")" >&2; exit 1; }
  touch "$PV/.complete"
fi
