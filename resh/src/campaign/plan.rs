//! Injection planning: a pure function from the campaign's seed and shape to the list of
//! injections, one per experiment. The same seed gives the same plan, and the plan is shared by
//! every replica count, so N=3 and the N=1 baseline face exactly the same faults.
use replicas::inject::{InjectKind, InjectRequest, Rng};
use serde::Serialize;

use super::config::CampaignConfig;

/// One planned injection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Injection {
    /// The experiment's number (0-based).
    pub experiment: usize,
    /// What to inject.
    pub kind: InjectKind,
    /// The target, drawn among the largest replica count; an experiment with N replicas hits
    /// replica `target % N` (so the N=1 baseline always hits its only replica).
    pub target: usize,
    /// When: just before request `request` of session `session` is sent.
    pub session: usize,
    /// See `session`.
    pub request: usize,
    /// The injection's own seed: which bits, which memory location.
    pub seed: u64,
    /// hang: how long the process stays stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// delay: how long the output is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// The plan of a campaign: `experiments` injections.
///
/// Kinds come in equal shares: experiments are taken in blocks of `kinds.len()`, and every
/// block is a permutation of the kinds, shuffled by the seed. Target, time and the injection's
/// own seed are drawn uniformly. Each block and each experiment draws from a stream of its own
/// (derived from the seed and its number), so a longer campaign with the same seed starts with
/// exactly the experiments of a shorter one.
pub fn plan(config: &CampaignConfig) -> Vec<Injection> {
    let k = config.kinds.len().max(1);
    let w = &config.workload;
    let f = &config.faults;
    let mut block: Vec<InjectKind> = Vec::new();
    (0..config.experiments)
        .map(|experiment| {
            if experiment % k == 0 {
                block = config.kinds.clone();
                let mut rng = stream(config.seed, 1, (experiment / k) as u64);
                // Fisher-Yates.
                for i in (1..block.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    block.swap(i, j);
                }
            }
            let kind = block.get(experiment % k).copied().unwrap_or(InjectKind::Crash);
            // Every field is drawn for every experiment, whatever its kind, so that the draws
            // do not depend on the kind.
            let mut rng = stream(config.seed, 2, experiment as u64);
            let target = rng.below(config.max_replicas() as u64) as usize;
            let session = rng.below(w.sessions as u64) as usize;
            let request = rng.below(w.requests as u64) as usize;
            let seed = rng.next_u64();
            let hang = rng.between(f.hang_ms[0], f.hang_ms[1]);
            let delay = rng.between(f.delay_ms[0], f.delay_ms[1]);
            Injection {
                experiment,
                kind,
                target,
                session,
                request,
                seed,
                duration_ms: (kind == InjectKind::Hang).then_some(hang),
                delay_ms: (kind == InjectKind::Delay).then_some(delay),
            }
        })
        .collect()
}

/// An RNG stream for (`seed`, `tag`, `index`): independent streams from one seed.
fn stream(seed: u64, tag: u64, index: u64) -> Rng {
    let mix = Rng::new(tag).next_u64() ^ Rng::new(index).next_u64().rotate_left(29);
    Rng::new(Rng::new(seed ^ mix).next_u64())
}

impl Injection {
    /// The target's index among `replicas` replicas.
    pub fn target_in(&self, replicas: usize) -> usize {
        self.target % replicas.max(1)
    }

    /// The request to hand to [`replicas::inject::perform`] for replica `name`.
    pub fn request(&self, name: &str, config: &CampaignConfig) -> InjectRequest {
        let mut r = InjectRequest::new(name, self.kind);
        r.seed = Some(self.seed);
        match self.kind {
            InjectKind::Outflip | InjectKind::Inflip => {
                r.bits = Some(config.faults.bits);
                r.span_bytes = config.faults.span_bytes;
            }
            InjectKind::Memflip => {
                r.bits = Some(config.faults.bits);
                r.region = Some(config.faults.region);
            }
            InjectKind::Hang => r.duration_ms = self.duration_ms,
            InjectKind::Delay => r.delay_ms = self.delay_ms,
            InjectKind::Crash => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64, experiments: usize) -> CampaignConfig {
        let text = format!("seed = {seed}\nexperiments = {experiments}\n[service]\ncommand = [\"x\", \"{{port}}\"]\n");
        CampaignConfig::parse(&text, "t").expect("valid")
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        assert_eq!(plan(&config(42, 40)), plan(&config(42, 40)));
        assert_ne!(plan(&config(42, 40)), plan(&config(43, 40)));
    }

    #[test]
    fn kinds_come_in_equal_shares_and_fields_in_range() {
        let c = config(7, 60);
        let p = plan(&c);
        assert_eq!(p.len(), 60);
        for kind in InjectKind::ALL {
            assert_eq!(p.iter().filter(|i| i.kind == kind).count(), 10, "{kind}");
        }
        for (n, i) in p.iter().enumerate() {
            assert_eq!(i.experiment, n);
            assert!(i.target < 3 && i.session < c.workload.sessions && i.request < c.workload.requests);
            assert_eq!(i.duration_ms.is_some(), i.kind == InjectKind::Hang);
            assert_eq!(i.delay_ms.is_some(), i.kind == InjectKind::Delay);
            if let Some(d) = i.duration_ms {
                assert!((c.faults.hang_ms[0]..=c.faults.hang_ms[1]).contains(&d));
            }
            assert!(i.request(&format!("r{}", i.target_in(3) + 1), &c).check().is_ok(), "{i:?}");
            assert_eq!(i.target_in(1), 0);
        }
        // Not all the same: the draws are actually random.
        assert!(p.iter().any(|i| i.target != p[0].target));
        assert!(p.iter().any(|i| i.kind != p[0].kind));
    }

    #[test]
    fn a_longer_campaign_begins_with_the_shorter_one() {
        let (a, b) = (config(9, 12), config(9, 30));
        assert_eq!(plan(&a)[..], plan(&b)[..12]);
    }
}
