#!/usr/bin/env bash
# HAT on real data (Debian's En-De catalogs) on a 2-GPU machine, in parts that each fit in a
# 10-minute job. How the committed results were made (2 NVIDIA H200, 2026-11-29):
#
#   bash bench/debian_gpu.sh 1   # GPU0: SuperTransformer (<= 6 min), then the search;
#                                # GPU1: latency dataset + predictor, then the fidelity check's
#                                # from-scratch trainings (20 at once ran out of memory there);
#                                # the fidelity check's inherited losses
#   bash bench/debian_gpu.sh 2   # retrain the found models and the baseline (2 per GPU), BLEU,
#                                # measured latency; BLEU on the unseen-packages split too
#   bash bench/debian_gpu.sh 3   # the 20 from-scratch trainings, 10 per GPU, 400 updates each
#   python -m bench.studies.fidelity --run runs/debian --device cpu --max-update 400 \
#       --out bench/results/fidelity_debian_h200_400.json            # combine (no GPU needed)
#   (fidelity_debian_h200_timecap.json: the scratch part again with --max-update 2500
#    --stop-minutes 7.5 --jobs 20 --gpus 2; every training hit the time cap first)
#   pipeline_debian_h200.json: runs/debian/results.json with the unseen-split BLEU and the calls.
#
#   bash bench/debian_gpu.sh converge MINUTES   # one GPU, in calls of <= 10 minutes: starts
#                                # the convergence trainings detached and reads them; repeat
#                                # "bash bench/debian_gpu.sh collect" until "finished": true
#                                # (debian_en-de_convergence_h200.json, 2026-12-02)
#   TASK=debian.en-fr CONV_JOBS="largest_alone_do0.1 smallest_alone_do0.1" \
#     bash bench/debian_gpu.sh converge 13     # the standalone half only, then "collect"; the
#                                # gap of a pipeline run's SuperTransformer, anywhere (no GPU):
#   python -m bench.studies.debian_convergence --replot CONVERGENCE_JSON \
#       --pipeline-super bench/results/pipeline_debian_en-fr_h200.json
#   bash bench/debian_gpu.sh fidelity 0-9 [MINUTES]   # one GPU: 10 of the fidelity check's 20
#                                # random SubTransformers from scratch until converged, detached,
#                                # 5 at a time; "bash bench/debian_gpu.sh fidelity-wait" until
#                                # "finished" (call it again at once: an idle machine is given
#                                # back after ~30 s and the run goes with it); the rows saved so
#                                # far come back each time. 2026-12-02: 0-14 trained (11
#                                # converged; 10-13 hit the time cap), saved in
#                                # bench/results/fidelity_debian_en-de_scratch_h200.json; 15-19 trained in a later session
#                                # (scratch rows: bench/results/fidelity_debian_en-de_scratch15-19_h200.json),
#                                # combined: fidelity_debian_en-de_h200.json; 10-13 longer:
#                                # "fidelity 10-13 16". Then, anywhere (no GPU;
#                                # --scratch-from merges, converged rows win; --part combine
#                                # trains nothing and reports an interim result if rows miss):
#   python -m bench.studies.fidelity --task debian.en-de --run runs/fidelity_debian --samples 20 \
#       --converged-bits 0.05 --max-update 8000 --part combine \
#       --scratch-from bench/results/fidelity_debian_en-de_scratch_h200.json \
#       bench/results/fidelity_debian_en-de_scratch15-19_h200.json NEW/scratch.json \
#       --inherited-from bench/results/debian_en-de_convergence_h200.json:super_sandwich1_do0.1 \
#       --out bench/results/fidelity_debian_en-de_h200.json
#
# The same run on one GPU, in one command: python -m hat.pipeline --task debian.en-de --out DIR;
# in calls of <= 10 minutes: "bash bench/debian_gpu.sh pipeline", then at once and again
# "WAIT_S=540 bash bench/debian_gpu.sh pipeline-wait" until "finished" (results.json,
# pipeline.json with the stage times, the plot and a checkpoint-free tarball of the run come
# back each time; reply to each call at once: an idle machine is given back after ~30 s).
# 2026-12-04: finished in four calls, 25.9 minutes of stages
# (bench/results/pipeline_debian_en-de_h200.json). The Python there needs hat's requirements,
# sacremoses included: an image installed with --no-deps needs its wheel (and regex, joblib,
# click) carried too; the pipeline checks before any work. If the machine is lost:
# unpack the last run_small.tgz into runs/COPY, carry it and run "SRC=runs/COPY bash
# bench/debian_gpu.sh pipeline-resume", then pipeline-wait: the stages done and every model
# already scored (each is scored right after its retraining) are kept. A machine without the corpus
# needs data/debian.en-de/data-bin and the two BLEU references,
# data/debian.en-de/tokenized/{test,test_unseen}.detok.de (the corpus stage checks them).
set -u
RUN=${RUN:-runs/debian}
TASK=${TASK:-debian.en-de}  # TASK=debian.en-fr for the other pair
FID=(--run "$RUN" --device cuda --samples 20 --seed 7 --max-update 400)
mkdir -p "$RUN"
mps_start() {  # a CUDA MPS control daemon of this job's own; its clients find it by these paths
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/hat_mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/hat_mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  pgrep -f nvidia-cuda-mps-control >/dev/null || nvidia-cuda-mps-control -d || exit 5
}
any_alive() {  # whether any process named in pid file $1 (one pid a line) still runs
  for p in $(cat "$1"); do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}
wait_detached() {  # up to WAIT_S seconds or until every process in pid file $1 has ended
  end=$(( $(date +%s) + ${WAIT_S:-540} ))
  while any_alive "$1" && [ "$(date +%s)" -lt "$end" ]; do
    sleep 10
  done
  any_alive "$1" && echo "running" || echo "finished"
}
case "${1:-}" in
install)  # a machine whose Python lacks hat's requirements: the wheels carried in .whl
  # (pip download / pip wheel --no-deps for its Python), into /tmp/site; then run the other
  # targets with PYTHONPATH=/tmp/site:$PWD
  python -c "import fairseq, sacremoses, sacrebleu, configargparse" 2>/dev/null && exit 0
  python -m pip install -q --no-deps --no-index --target /tmp/site .whl/*.whl || exit 5
  PYTHONPATH=/tmp/site:$PWD python -c "import fairseq, sacremoses, sacrebleu, configargparse" \
    || exit 5
  ;;
1)
  python -m hat.pipeline --task $TASK --gpus 2 --out "$RUN" --stop-after search &
  pipe=$!
  done_stage() {  # wait until pipeline.json lists stage $1 (or the pipeline ended)
    until python -c "import json,sys; sys.exit('$1' not in json.load(open('$RUN/pipeline.json'))['stages'])" 2>/dev/null; do
      kill -0 $pipe 2>/dev/null || return 1
      sleep 5
    done
  }
  # the from-scratch trainings take GPU1 once the latency stages are done with it
  done_stage latency_predictor
  # (on one GPU at most 10 at once: 20 trainings at 16k tokens did not fit in its 140 GB)
  CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=1 python -m bench.studies.fidelity "${FID[@]}" --part scratch \
    --jobs 10 --stop-minutes 6 > "$RUN/fidelity_scratch.log" 2>&1 &
  fid=$!
  # the inherited losses need the SuperTransformer: beside the search on GPU0
  done_stage supertransformer
  CUDA_VISIBLE_DEVICES=0 python -m bench.studies.fidelity "${FID[@]}" --part inherited \
    > "$RUN/fidelity_inherited.log" 2>&1 &
  inh=$!
  wait $pipe
  rc=$?
  wait $inh $fid
  tail -3 "$RUN/fidelity_scratch.log" "$RUN/fidelity_inherited.log"
  exit $rc
  ;;
2)
  python -m hat.pipeline --task $TASK --gpus 2 --jobs 4 --out "$RUN" || exit $?
  python - "$RUN" <<'EOF'
import json, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
run = sys.argv[1]
res = json.load(open(f"{run}/results.json"))
def unseen(i_m):
    i, m = i_m
    cmd = [sys.executable, "-m", "hat.bleu", "--task", "debian.en-de", "--checkpoint",
           m["checkpoint"], "--sub-config", m["yaml"], "--metric", "sacre", "--subset",
           "test_unseen", "--ref", "data/debian.en-de/tokenized/test_unseen.detok.de", "--json"]
    env = {"CUDA_VISIBLE_DEVICES": str(i % 2)}
    import os
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    return m["name"], json.loads(line[-1]) if line else {"error": out.stderr[-2000:]}
with ThreadPoolExecutor(4) as ex:
    got = dict(ex.map(unseen, enumerate(res["models"])))
json.dump(got, open(f"{run}/bleu_test_unseen.json", "w"), indent=1)
print(json.dumps({k: v.get("bleu") for k, v in got.items()}))
EOF
  ;;
converge|collect)  # SuperTransformers vs standalone trainings run to convergence, one GPU
  # CONV_JOBS: other trainings (bench.studies.debian_convergence's names), e.g. only
  # "largest_alone_do0.1 smallest_alone_do0.1" against a pipeline run's SuperTransformer
  CONV=(--task "$TASK" --work /tmp/hat_convergence --score-random 20
        --out "${OUT:-/tmp}/convergence.json")
  if [ "$1" = converge ]; then
    python -m bench.studies.debian_convergence --detach --until-converged --minutes "${2:-22}" \
      --jobs ${CONV_JOBS:-super_sandwich0_do0.1 super_sandwich1_do0.1 largest_alone_do0.1 \
      smallest_alone_do0.1} "${CONV[@]}" || exit $?
  fi
  python -m bench.studies.debian_convergence --collect --wait-s "${WAIT_S:-540}" "${CONV[@]}"
  ;;
fidelity)  # from-scratch trainings of check (a), without a pipeline run, started detached
  # JOBS at a time (5: 10 side by side trained ~3 updates/s each, 5 ~9, on one H200); with
  # MPS=1 (default) the trainings share the GPU through a CUDA MPS daemon of this job's own
  # (pipe folder in /tmp: no device setting changes); every finished training is scored and
  # saved in scratch.json at once, so "fidelity-wait" can bring back what is done
  FIDW=/tmp/hat_fidelity
  mkdir -p "$FIDW"
  if [ "${MPS:-1}" = 1 ]; then mps_start; fi
  setsid nohup python -m bench.studies.fidelity --task $TASK --run "$FIDW" --samples 20 --seed 7 \
    --device cuda --part scratch --indices "${2:?indices, e.g. 0-9}" --jobs "${JOBS:-5}" \
    --converged-bits 0.05 --max-update 8000 --stop-minutes "${3:-12}" \
    > "$FIDW/fidelity.log" 2>&1 < /dev/null &
  echo $! > "$FIDW/pid"
  echo "started: $FIDW/fidelity.log (pid $(cat "$FIDW/pid"), MPS=${MPS:-1}, JOBS=${JOBS:-5})"
  ;;
fidelity-wait)  # up to WAIT_S seconds or until the check ends; brings back what is saved
  FIDW=/tmp/hat_fidelity
  if [ ! -f "$FIDW/pid" ]; then  # a fresh machine: the detached run went with the old one
    echo "no detached fidelity run on this machine ($FIDW/pid missing): the machine that ran" \
      "it was given back; start it again" >&2
    exit 4
  fi
  wait_detached "$FIDW/pid"
  grep -h "done in\|Error\|error" "$FIDW/fidelity.log" | tail -12
  tail -3 "$FIDW/fidelity.log"
  cp "$FIDW"/fidelity_8000/scratch.json "$FIDW/fidelity.log" "${OUT:-/tmp}/" 2>/dev/null
  for f in "$FIDW"/fidelity_8000/sub*/convergence.json; do
    [ -f "$f" ] && cp "$f" "${OUT:-/tmp}/$(basename "$(dirname "$f")").convergence.json"
  done
  ;;
pipeline|pipeline-resume)  # the whole debian pipeline on one GPU, started detached (target:
  # <= 25 minutes); pipeline-resume: SRC=a copy of a run (run_small.tgz unpacked, no
  # checkpoints) continues on this machine: the stages done are kept, and so is every model
  # scored before (the retrain stage scores each model as soon as it is trained). PIPE_ARGS:
  # more hat.pipeline options (PIPE_ARGS="--limits-below 2": the 5 winners of HAT's fidelity
  # check; a resumed run must be given the same)
  PIPE=/tmp/hat_pipeline
  if [ "$1" = pipeline-resume ]; then
    [ -f "${SRC:?SRC=run copy}/pipeline.json" ] || { echo "$SRC: no pipeline.json" >&2; exit 4; }
    rm -rf "$PIPE" && mkdir -p "$PIPE/run" && cp -r "$SRC"/. "$PIPE/run/"
  fi
  mkdir -p "$PIPE"
  setsid nohup python -m hat.pipeline --task "${TASK_NAME:-$TASK}" ${PIPE_ARGS:-} --out "$PIPE/run" \
    > "$PIPE/pipeline.log" 2>&1 < /dev/null &
  echo $! > "$PIPE/pid"
  echo "started: $PIPE/pipeline.log (pid $(cat "$PIPE/pid"))"
  ;;
pipeline-wait)  # up to WAIT_S seconds or until the pipeline ends; brings back what it wrote
  PIPE=/tmp/hat_pipeline
  if [ ! -f "$PIPE/pid" ]; then
    echo "no detached pipeline on this machine ($PIPE/pid missing): start it again" >&2
    exit 4
  fi
  wait_detached "$PIPE/pid"
  tail -15 "$PIPE/pipeline.log"
  for f in pipeline.json results.json results.md bleu_vs_latency.png; do
    [ -f "$PIPE/run/$f" ] && cp "$PIPE/run/$f" "${OUT:-/tmp}/"
  done
  cp "$PIPE/pipeline.log" "${OUT:-/tmp}/" 2>/dev/null
  (cd "$PIPE/run" 2>/dev/null && tar czf "${OUT:-/tmp}/run_small.tgz" --exclude='checkpoint*.pt' \
    --exclude='data-bin' --exclude='data' . 2>/dev/null)
  ;;
retrain-found)  # SRC=a run copy (its search/*@*ms.yml and configs/retrain.yml): its found models
  # retrained from scratch, all at once through one MPS daemon, for up to WAIT_S seconds; their
  # logs and convergence.json come back (for a run whose machine was lost in the retrain stage)
  W=/tmp/hat_found
  mkdir -p "$W" && rm -f "$W/pids"
  mps_start
  for y in "${SRC:?SRC=run copy}"/search/*@*ms.yml; do
    n=$(basename "$y" .yml); n=hat_${n#*@}  # no "@": it does not come back from the device
    setsid nohup python train.py --configs="$y" --sub-configs="$SRC/configs/retrain.yml" \
      --save-dir "$W/$n" > "$W/$n.log" 2>&1 < /dev/null &
    echo $! >> "$W/pids"
  done
  wait_detached "$W/pids"
  for d in "$W"/hat_*/; do n=$(basename "$d"); mkdir -p "${OUT:-/tmp}/$n"
    cp "$d"/convergence.json "$d"/retrained.json "${OUT:-/tmp}/$n/" 2>/dev/null
    cp "$W/$n.log" "${OUT:-/tmp}/$n/train.log"; grep "| valid |" "$W/$n.log" | tail -2
  done
  ;;
profile)  # one training update's time, this code and (BEFORE=DIR: a checkout of an older
  # commit, e.g. "git archive REV bench hat configs train.py setup.py | tar -x -C DIR") side by
  # side on one GPU, both timed by this checkout's bench/; VARIANTS (bench.speed.train_profile's
  # names) for this code, BEFORE_VARIANTS for the older one
  P=(--warmup "${WARMUP:-20}" --updates "${UPDATES:-200}" --profile-updates 8)
  if [ -n "${BEFORE:-}" ]; then
    ln -sfn "$PWD/data" "$BEFORE/data"
    rm -rf "$BEFORE/bench" && cp -r bench "$BEFORE/bench"
    (cd "$BEFORE" && PYTHONPATH="${PYTHONPATH%%:*}:$PWD" python -m bench.speed.train_profile \
      --variants ${BEFORE_VARIANTS:-today} "${P[@]}" --work /tmp/hat_profile_before \
      --out "${OUT:-/tmp}/train_profile_before.json") || echo "before: failed"
  fi
  python -m bench.speed.train_profile --variants ${VARIANTS:-today} "${P[@]}" \
    --work /tmp/hat_profile --out "${OUT:-/tmp}/train_profile.json"
  ;;
savecost)  # what saving at every validation costs a retraining: a SubTransformer YAML ($2)
  # trained twice side by side for ${UPDATES:-760} updates with the task's retraining recipe,
  # saving every epoch (the pipeline since 2026-12-06) and only at the end; logs to $OUT
  for every in 1 1000; do
    setsid nohup python train.py --configs="${2:?SubTransformer YAML}" \
      --sub-configs="configs/$TASK/subtransformer/common.yml" --fp16 \
      --max-update "${UPDATES:-760}" --save-interval "$every" --no-epoch-checkpoints \
      --save-interval-updates 0 --save-dir "/tmp/hat_save$every" \
      > "${OUT:-/tmp}/save_every_$every.log" 2>&1 < /dev/null &
    echo $! >> /tmp/hat_save.pids
  done
  WAIT_S=${WAIT_S:-300} wait_detached /tmp/hat_save.pids
  grep -h "done training\|num_updates" "${OUT:-/tmp}"/save_every_*.log | tail -4
  ;;
mps)  # 4 SuperTransformer trainings side by side for 90 s, without and then with CUDA MPS
  python -m bench.speed.mps_side_by_side --jobs 4 --seconds 90 --out "${OUT:-/tmp}/mps_side_by_side.json"
  ;;
3)  # the from-scratch trainings of the fidelity check on both GPUs (when part 1 could not)
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 python -m bench.studies.fidelity \
    "${FID[@]}" --part scratch --jobs 20 --gpus 2 --stop-minutes 6
  ;;
*)
  echo "usage: bash bench/debian_gpu.sh install|1|2|3|converge|collect|fidelity|fidelity-wait|pipeline|pipeline-resume|pipeline-wait|retrain-found|profile|savecost|mps" >&2
  exit 2
  ;;
esac
