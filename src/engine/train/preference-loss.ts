// The preference losses of LLaMA-Factory stage dpo (src/llamafactory/train/dpo/trainer.py over
// TRL's DPOTrainer.dpo_loss) on the host: per-pair losses from the sequences' label log-probs,
// their gradient w.r.t. each sequence's summed log-prob, and the metrics TRL logs. No GPU code:
// the config reader and the studio's Method step use the types and defaults from here.
import { IGNORE_INDEX } from '../../data/types.ts';
import type { HostBatch } from '../model/batch.ts';

export type PrefLoss = 'sigmoid' | 'hinge' | 'ipo' | 'orpo' | 'simpo';
export const PREF_LOSSES: readonly PrefLoss[] = ['sigmoid', 'hinge', 'ipo', 'orpo', 'simpo'];

/** LLaMA-Factory RLHFArguments (hparams/finetuning_args.py), with its defaults in PREFERENCE_DEFAULTS. */
export interface PreferenceConfig {
  loss: PrefLoss;
  /** pref_beta. */
  beta: number;
  /** pref_ftx: weight of the SFT term −(chosen log-prob / chosen tokens). */
  ftx: number;
  /** dpo_label_smoothing (cDPO), sigmoid only. */
  labelSmoothing: number;
  /** simpo_gamma: SimPO's target reward margin. */
  simpoGamma: number;
}

export const PREFERENCE_DEFAULTS: Readonly<PreferenceConfig> = Object.freeze({
  loss: 'sigmoid',
  beta: 0.1,
  ftx: 0,
  labelSmoothing: 0,
  simpoGamma: 0.5,
});

/** finetuning_args.use_ref_model: ORPO and SimPO are reference-free. */
export function usesReference(loss: PrefLoss): boolean {
  return loss !== 'orpo' && loss !== 'simpo';
}

/** concatenated_forward: ipo, orpo and simpo divide the summed log-probs by the label count. */
export function averagesLogps(loss: PrefLoss): boolean {
  return loss === 'ipo' || loss === 'orpo' || loss === 'simpo';
}

/** Summed label log-prob and label count of one sequence. */
export interface SequenceLogp {
  sum: number;
  count: number;
}

export interface PairLogps {
  chosen: SequenceLogp;
  rejected: SequenceLogp;
  refChosen?: SequenceLogp;
  refRejected?: SequenceLogp;
}

/** What LLaMA-Factory's get_batch_loss_metrics logs (logits/* excepted: they need every logit of the batch). */
export type PreferenceMetrics = Record<string, number>;

export interface PreferenceLossResult {
  /** Mean over the pairs (losses.mean()). */
  loss: number;
  /** dLoss/d(summed log-prob) of each chosen and each rejected sequence (the mean's 1/P included). */
  gradChosen: Float64Array;
  gradRejected: Float64Array;
  metrics: PreferenceMetrics;
}

const logSigmoid = (x: number) => (x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x)));
const sigmoid = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
const mean = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return a.length ? s / a.length : NaN;
};

/**
 * The preference loss of P pairs, its gradient w.r.t. the summed log-probs and the metrics:
 *  z = (c − r) − (c₀ − r₀) with c, r the policy's and c₀, r₀ the reference's log-probs (averaged
 *  per token for ipo/orpo/simpo);
 *  sigmoid −(1−ε)·logσ(βz) − ε·logσ(−βz); hinge relu(1 − βz); ipo (z − 1/(2β))²;
 *  simpo −logσ(β(c − r) − γ); orpo −c + β·(−logσ(log_odds)),
 *  log_odds = (c − r) − (log(1 − eᶜ) − log(1 − eʳ)); pref_ftx adds ftx·(−c_sum/|chosen|).
 *  Rewards β(c − c₀), β(r − r₀) (β·c, β·r without a reference).
 */
export function preferenceLoss(cfg: PreferenceConfig, pairs: readonly PairLogps[]): PreferenceLossResult {
  const P = pairs.length;
  if (!P) throw new Error('preference loss: no pairs');
  const { beta, loss: type } = cfg;
  const avg = averagesLogps(type);
  const ref = usesReference(type);
  const losses = new Float64Array(P);
  const sft = new Float64Array(P);
  const gradChosen = new Float64Array(P);
  const gradRejected = new Float64Array(P);
  const rc = new Float64Array(P);
  const rr = new Float64Array(P);
  const lc = new Float64Array(P);
  const lr = new Float64Array(P);
  const norm = (s: SequenceLogp) => (avg ? s.sum / s.count : s.sum);
  pairs.forEach((p, i) => {
    if (!(p.chosen.count > 0) || !(p.rejected.count > 0))
      throw new Error(`preference loss: pair ${i} has no chosen or no rejected label token`);
    const c = norm(p.chosen);
    const r = norm(p.rejected);
    lc[i] = c;
    lr[i] = r;
    // dL/dc and dL/dr in the (possibly averaged) log-prob units.
    let dc: number;
    let dr: number;
    if (ref) {
      if (!p.refChosen || !p.refRejected) throw new Error(`preference loss: ${type} needs reference log-probs`);
      const c0 = norm(p.refChosen);
      const r0 = norm(p.refRejected);
      const z = c - r - (c0 - r0);
      let dz: number;
      if (type === 'sigmoid') {
        const e = cfg.labelSmoothing;
        losses[i] = -(1 - e) * logSigmoid(beta * z) - e * logSigmoid(-beta * z);
        dz = -(1 - e) * beta * sigmoid(-beta * z) + e * beta * sigmoid(beta * z);
      } else if (type === 'hinge') {
        const h = 1 - beta * z;
        losses[i] = Math.max(0, h);
        dz = h > 0 ? -beta : 0;
      } else {
        const d = z - 1 / (2 * beta);
        losses[i] = d * d;
        dz = 2 * d;
      }
      dc = dz;
      dr = -dz;
      rc[i] = beta * (c - c0);
      rr[i] = beta * (r - r0);
    } else if (type === 'simpo') {
      const logits = c - r - cfg.simpoGamma / beta;
      losses[i] = -logSigmoid(beta * logits);
      dc = -beta * sigmoid(-beta * logits);
      dr = -dc;
      rc[i] = beta * c;
      rr[i] = beta * r;
    } else {
      // ORPO (Hong et al. 2024): log odds(y|x) = log p − log(1 − p) with p the average-token probability.
      const l1c = Math.log1p(-Math.exp(c));
      const l1r = Math.log1p(-Math.exp(r));
      const logOdds = c - r - (l1c - l1r);
      losses[i] = -c - beta * logSigmoid(logOdds);
      const s = sigmoid(-logOdds);
      dc = -1 - (beta * s) / (1 - Math.exp(c));
      dr = (beta * s) / (1 - Math.exp(r));
      rc[i] = beta * c;
      rr[i] = beta * r;
    }
    // sft_loss = −chosen_logps_avg (LLaMA-Factory), whatever the loss.
    const cAvg = p.chosen.sum / p.chosen.count;
    sft[i] = -cAvg;
    // Chain to the summed log-probs: d c_avg / d c_sum = 1/count.
    let gc = avg ? dc / p.chosen.count : dc;
    const gr = avg ? dr / p.rejected.count : dr;
    if (cfg.ftx > 1e-6) {
      losses[i] += cfg.ftx * sft[i];
      gc -= cfg.ftx / p.chosen.count;
    }
    gradChosen[i] = gc / P;
    gradRejected[i] = gr / P;
  });
  const metrics: PreferenceMetrics = {
    'rewards/chosen': mean(rc),
    'rewards/rejected': mean(rr),
    'rewards/accuracies': mean(Array.from(rc, (v, i) => (v > rr[i] ? 1 : 0))),
    'rewards/margins': mean(Array.from(rc, (v, i) => v - rr[i])),
    'logps/chosen': mean(lc),
    'logps/rejected': mean(lr),
  };
  if (type === 'orpo') {
    metrics.sft_loss = mean(sft);
    metrics.odds_ratio_loss = mean(Array.from(losses, (l, i) => (l - sft[i]) / beta));
  }
  return { loss: mean(losses), gradChosen, gradRejected, metrics };
}

/** Mean of each metric over micro-batches (LLaMA-Factory's log averages the stored values). */
export function meanMetrics(list: readonly PreferenceMetrics[]): PreferenceMetrics {
  const out: PreferenceMetrics = {};
  if (!list.length) return out;
  for (const k of Object.keys(list[0])) out[k] = mean(list.map((m) => m[k]));
  return out;
}

/**
 * Per-row weights for the cross-entropy kernel's per-row scale: row n of sequence b gets
 * −scale·dL/dlogp_b when it has a label (its gradient is then scale·dL/dlogp_b·(onehot − softmax)
 * negated twice: CE writes (softmax − onehot)·w).
 */
export function rowWeights(hb: HostBatch, gradChosen: Float64Array, gradRejected: Float64Array, scale: number) {
  const P = gradChosen.length;
  if (hb.B !== 2 * P) throw new Error(`preference batch: ${hb.B} rows for ${P} pairs (expected ${2 * P})`);
  const w = new Float32Array(hb.N);
  for (let b = 0; b < hb.B; b++) {
    const g = b < P ? gradChosen[b] : gradRejected[b - P];
    for (let t = 0; t < hb.T; t++) {
      const n = b * hb.T + t;
      if (hb.shifted[n] !== IGNORE_INDEX) w[n] = -scale * g;
    }
  }
  return w;
}

/** Pairs' log-probs from the per-sequence [Σ logp, count] values (chosen rows first). */
export function pairLogps(policy: Float32Array, ref: Float32Array | null, pairs: number): PairLogps[] {
  const seq = (a: Float32Array, b: number): SequenceLogp => ({ sum: a[2 * b], count: a[2 * b + 1] });
  return Array.from({ length: pairs }, (_, i) => ({
    chosen: seq(policy, i),
    rejected: seq(policy, pairs + i),
    ...(ref ? { refChosen: seq(ref, i), refRejected: seq(ref, pairs + i) } : {}),
  }));
}
