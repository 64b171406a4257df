//! Learning-rate schedules and data mixtures over training steps: constant, cosine, WSD
//! (warmup-stable-decay) and FG-WSD (fine-grained WSD, the Nanbeige recipe): warmup, a stable stage
//! split into phases that each sample the datasets with their own weights (progressively higher
//! quality), then a decay stage with its own mixture. FG-WSD comes from one JSON file:
//!
//! ```json
//! {"lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 20,
//!  "datasets": {"general": "general.jsonl", "reasoning": "reasoning.jsonl"},
//!  "stable": [{"steps": 200, "mix": {"general": 0.8, "reasoning": 0.2}},
//!             {"steps": 200, "mix": {"general": 0.4, "reasoning": 0.6}}],
//!  "decay": {"steps": 100, "mix": {"reasoning": 1.0}, "shape": "linear"}}
//! ```
//! Dataset paths are relative to the config file. Warmup runs inside the first phase. Not here:
//! drawing examples (data.rs `pack_row` takes the weights this returns).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DecayShape {
    Linear,
    Cosine,
    /// 1 - sqrt(progress): drops fast at first (used by several WSD papers).
    Sqrt,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Constant,
    Cosine,
    /// Constant after warmup, then decay over the last `decay_steps`.
    Wsd {
        decay_steps: u64,
        shape: DecayShape,
    },
}

/// One stage of the data mixture: `steps` steps sampling dataset i with weight `mix[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub steps: u64,
    pub mix: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub kind: Kind,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub total: u64,
    /// Named datasets (FG-WSD); empty means the single `--data` file.
    pub datasets: Vec<(String, PathBuf)>,
    /// Mixture phases covering all `total` steps (FG-WSD); empty means one dataset throughout.
    pub phases: Vec<Phase>,
}

impl Schedule {
    /// `constant`, `cosine` or `wsd` (decay over the last 20% of steps) for `total` steps.
    pub fn named(name: &str, lr: f64, min_lr: f64, warmup: u64, total: u64) -> Result<Self> {
        let kind = match name {
            "constant" => Kind::Constant,
            "cosine" => Kind::Cosine,
            "wsd" => Kind::Wsd { decay_steps: (total / 5).max(1), shape: DecayShape::Linear },
            other => bail!("unknown schedule `{other}` (constant, cosine, wsd, or an FG-WSD config file)"),
        };
        if total == 0 {
            bail!("the schedule needs at least one step");
        }
        Ok(Self { kind, lr, min_lr, warmup: warmup.min(total), total, datasets: vec![], phases: vec![] })
    }

    /// Read an FG-WSD config file (see the header). `lr` overrides the file's `lr` when given.
    pub fn from_file(path: &Path, lr: Option<f64>) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
        Self::from_json(&v, path.parent().unwrap_or(Path::new(".")), lr).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(v: &Value, base: &Path, lr_override: Option<f64>) -> Result<Self> {
        let num = |k: &str| v.get(k).and_then(Value::as_f64);
        let lr = lr_override.or(num("lr")).context("no `lr`")?;
        let min_lr = num("min_lr").unwrap_or(lr * 0.1);
        let warmup = num("warmup_steps").unwrap_or(0.0) as u64;
        let ds = v.get("datasets").and_then(Value::as_object).context("no `datasets` object")?;
        if ds.is_empty() {
            bail!("`datasets` is empty");
        }
        let mut datasets = Vec::new();
        for (name, p) in ds {
            let p = p.as_str().with_context(|| format!("dataset `{name}`: the path must be a string"))?;
            datasets.push((name.clone(), base.join(p)));
        }
        let phase = |p: &Value, what: &str| -> Result<Phase> {
            let steps = p.get("steps").and_then(Value::as_u64).with_context(|| format!("{what}: no `steps`"))?;
            let mix = p.get("mix").and_then(Value::as_object).with_context(|| format!("{what}: no `mix`"))?;
            for k in mix.keys() {
                if !ds.contains_key(k) {
                    bail!("{what}: mix names unknown dataset `{k}`");
                }
            }
            let w: Vec<f64> = datasets.iter().map(|(n, _)| mix.get(n).and_then(Value::as_f64).unwrap_or(0.0)).collect();
            if w.iter().any(|x| *x < 0.0 || !x.is_finite()) || w.iter().sum::<f64>() <= 0.0 {
                bail!("{what}: mixture weights must be non-negative and not all zero");
            }
            Ok(Phase { steps, mix: w })
        };
        let mut phases = Vec::new();
        for (i, p) in
            v.get("stable").and_then(Value::as_array).context("no `stable` list of phases")?.iter().enumerate()
        {
            phases.push(phase(p, &format!("stable phase {}", i + 1))?);
        }
        if phases.is_empty() {
            bail!("`stable` has no phases");
        }
        let d = v.get("decay").context("no `decay` stage")?;
        let decay = phase(d, "decay")?;
        let shape = match d.get("shape").and_then(Value::as_str).unwrap_or("linear") {
            "linear" => DecayShape::Linear,
            "cosine" => DecayShape::Cosine,
            "sqrt" => DecayShape::Sqrt,
            s => bail!("decay: unknown shape `{s}` (linear, cosine, sqrt)"),
        };
        let decay_steps = decay.steps;
        phases.push(decay);
        let total: u64 = phases.iter().map(|p| p.steps).sum();
        if total == 0 {
            bail!("the phases have no steps");
        }
        Ok(Self {
            kind: Kind::Wsd { decay_steps, shape },
            lr,
            min_lr,
            warmup: warmup.min(total),
            total,
            datasets,
            phases,
        })
    }

    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = |a: u64, b: u64| (b.saturating_sub(a)).max(1) as f64;
        match &self.kind {
            Kind::Constant => self.lr,
            Kind::Cosine => {
                let p = ((step - self.warmup) as f64 / span(self.warmup + 1, self.total)).min(1.0);
                self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (PI * p).cos())
            }
            Kind::Wsd { decay_steps, shape } => {
                let start = self.total.saturating_sub(*decay_steps);
                if step < start {
                    return self.lr;
                }
                let p = ((step - start + 1) as f64 / *decay_steps as f64).min(1.0);
                let f = match shape {
                    DecayShape::Linear => 1.0 - p,
                    DecayShape::Cosine => 0.5 * (1.0 + (PI * p).cos()),
                    DecayShape::Sqrt => 1.0 - p.sqrt(),
                };
                self.min_lr + (self.lr - self.min_lr) * f
            }
        }
    }

    /// Mixture weights for `step` (one per dataset); `[1.0]` without phases. Steps past the end
    /// keep the last phase.
    pub fn mix_at(&self, step: u64) -> Vec<f64> {
        let mut end = 0;
        for p in &self.phases {
            end += p.steps;
            if step < end {
                return p.mix.clone();
            }
        }
        self.phases.last().map(|p| p.mix.clone()).unwrap_or_else(|| vec![1.0])
    }

    /// Index of the phase `step` is in (0 without phases), for logs.
    pub fn phase_at(&self, step: u64) -> usize {
        let mut end = 0;
        for (i, p) in self.phases.iter().enumerate() {
            end += p.steps;
            if step < end {
                return i;
            }
        }
        self.phases.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{pack_row, Example, Rng, Stream};
    use serde_json::json;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn constant_and_warmup() {
        let s = Schedule::named("constant", 1e-3, 0.0, 4, 100).unwrap();
        assert!(close(s.lr_at(0), 0.25e-3) && close(s.lr_at(3), 1e-3) && close(s.lr_at(99), 1e-3));
    }

    #[test]
    fn cosine_goes_from_peak_to_min() {
        let s = Schedule::named("cosine", 1.0, 0.1, 0, 11).unwrap();
        assert!(close(s.lr_at(0), 1.0));
        assert!(close(s.lr_at(5), 0.55), "midpoint {}", s.lr_at(5));
        assert!(close(s.lr_at(10), 0.1));
        for i in 1..11 {
            assert!(s.lr_at(i) < s.lr_at(i - 1));
        }
    }

    #[test]
    fn wsd_is_flat_then_decays_over_the_last_fifth() {
        let s = Schedule::named("wsd", 1.0, 0.0, 10, 100).unwrap();
        assert!(close(s.lr_at(4), 0.5));
        assert!(close(s.lr_at(79), 1.0));
        assert!(close(s.lr_at(80), 1.0 - 1.0 / 20.0));
        assert!(close(s.lr_at(89), 0.5));
        assert!(close(s.lr_at(99), 0.0));
    }

    fn fg() -> Schedule {
        let v = json!({"lr": 1.0, "min_lr": 0.2, "warmup_steps": 2,
            "datasets": {"a": "a.jsonl", "b": "b.jsonl", "c": "c.jsonl"},
            "stable": [{"steps": 4, "mix": {"a": 1.0}}, {"steps": 4, "mix": {"a": 0.5, "b": 0.5}}],
            "decay": {"steps": 4, "mix": {"b": 0.25, "c": 0.75}, "shape": "sqrt"}});
        Schedule::from_json(&v, Path::new("/data"), None).unwrap()
    }

    #[test]
    fn fg_wsd_phases_lr_and_mixtures() {
        let s = fg();
        assert_eq!(s.total, 12);
        assert_eq!(s.datasets[2].1, Path::new("/data/c.jsonl"));
        let lrs: Vec<f64> = (0..12).map(|i| s.lr_at(i)).collect();
        assert!(close(lrs[0], 0.5) && close(lrs[1], 1.0) && close(lrs[7], 1.0));
        // sqrt decay over steps 8..11: 1 - sqrt(k/4)
        for k in 1..=4u64 {
            let want = 0.2 + 0.8 * (1.0 - (k as f64 / 4.0).sqrt());
            assert!(close(lrs[7 + k as usize], want), "step {}: {} vs {want}", 7 + k, lrs[7 + k as usize]);
        }
        assert_eq!(s.mix_at(0), vec![1.0, 0.0, 0.0]);
        assert_eq!(s.mix_at(4), vec![0.5, 0.5, 0.0]);
        assert_eq!(s.mix_at(8), vec![0.0, 0.25, 0.75]);
        assert_eq!(s.mix_at(50), vec![0.0, 0.25, 0.75]);
        assert_eq!((s.phase_at(3), s.phase_at(4), s.phase_at(11)), (0, 1, 2));
    }

    #[test]
    fn fg_wsd_rejects_bad_configs() {
        let bad = [
            json!({"lr": 1.0, "datasets": {}, "stable": [], "decay": {}}),
            json!({"lr": 1.0, "datasets": {"a": "a"}, "stable": [{"steps": 1, "mix": {"zz": 1.0}}], "decay": {"steps": 1, "mix": {"a": 1}}}),
            json!({"lr": 1.0, "datasets": {"a": "a"}, "stable": [{"steps": 1, "mix": {"a": 0.0}}], "decay": {"steps": 1, "mix": {"a": 1}}}),
            json!({"lr": 1.0, "datasets": {"a": "a"}, "stable": [{"steps": 1, "mix": {"a": 1}}]}),
        ];
        for b in bad {
            assert!(Schedule::from_json(&b, Path::new("."), None).is_err(), "{b}");
        }
    }

    /// Rows packed in the decay phase draw datasets in the phase's proportions.
    #[test]
    fn mixture_sampling_follows_the_phase_weights() {
        let s = fg();
        let ds = |tag: u32| {
            let ex: Vec<Example> =
                (0..7).map(|i| Example { ids: vec![tag, i, i], mask: vec![true; 3], line: i as usize + 1 }).collect();
            Stream::new(ex, tag as u64).unwrap()
        };
        let mut streams = vec![ds(100), ds(200), ds(300)];
        let mut rng = Rng::new(5);
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            let row = pack_row(&mut streams, &s.mix_at(9), 3, &mut rng);
            counts[(row.ids[0] / 100 - 1) as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        let fc = counts[2] as f64 / 4000.0;
        assert!((fc - 0.75).abs() < 0.03, "{counts:?}");
    }
}
