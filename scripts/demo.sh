#!/usr/bin/env bash
# The main job in one command: set up, make the synthetic action set, preprocess it
# with Beam, train a (2+1)D ResNet, evaluate and export it (about 5.5 min on 2 idle cores).
#
#   bash scripts/demo.sh                    # the built-in synthetic motion classes
#   bash scripts/demo.sh --source UCF101.zip --num_classes 10 --per_class train=30,val=10,test=10
#
# With --source, the same pipeline runs on a real UCF101 folder, zip or URL (the
# tutorial's subset settings above); every other flag goes to python -m preprocess.
# WORK (default demo_output/) holds the videos, the records and the run.
source "$(dirname "$0")/env.sh"
WORK="${WORK:-$REPO/demo_output}"
started=$(date +%s)

if [[ "${1:-}" == "--source" ]]; then
  # The tutorial's frames (padded 224 squares) unless the command line says otherwise.
  preprocess_args=(--resize pad --image_size 224 "$@")
  train_args=(--preset tutorial --epochs "${EPOCHS:-10}")
else
  echo "== 1/3 synthetic videos: 8 motion classes x 10 groups x 5 clips (XviD, 320x240, 25 fps)"
  python -m preprocess.synthetic --output_dir "$WORK/videos" --groups 10 --clips_per_group 5
  preprocess_args=(--source "$WORK/videos/UCF101" --per_class train=30,val=5,test=10
                   --image_size 72)
  train_args=(--preset demo)
fi

echo "== 2/3 preprocess: decode every video once into TFRecords (Beam DirectRunner)"
python -m preprocess "${preprocess_args[@]}" --output_dir "$WORK/records" --overwrite

echo "== 3/3 train, evaluate and export"
python train.py --records "$WORK/records" --output_dir "$WORK/run" --overwrite "${train_args[@]}"

python - "$WORK/run/metrics.json" "$started" <<'PY'
import json, sys, time
metrics = json.load(open(sys.argv[1]))
split = next(k for k in metrics if k not in ("training", "evaluated"))
print(f"\ndemo: {split} video accuracy {metrics[split]['accuracy']:.1%} "
      f"in {time.time() - int(sys.argv[2]):.0f} s")
PY
echo "demo: predict a video with"
echo "  python scripts/predict.py --model $WORK/run $(ls "$WORK"/videos/UCF101/*.avi 2>/dev/null | head -1)"
