//! The request texts: a built-in corpus of short (~10 words), medium (~60 words) and
//! long (~512 tokens) reviews, a weighted mix of them, or a file with one text per line.
//! The choice of text per request is deterministic for a given seed, and the same for
//! every backend of a run.

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Review sentences the built-in texts are made of, positive and negative.
const SENTENCES: &[&str] = &[
    "This film was a delight from start to finish.",
    "The acting felt wooden and the plot dragged badly.",
    "I loved the soundtrack and the warm characters.",
    "A boring, predictable mess that wasted my evening.",
    "The director handles the quiet moments with real care.",
    "Terrible dialogue, and the ending made no sense at all.",
    "One of the best stories I have seen this year.",
    "The jokes fell flat and the pacing was painfully slow.",
    "Beautiful photography and a moving final scene.",
    "I wanted to leave halfway through, it was that dull.",
    "The cast has great chemistry and the script is sharp.",
    "Cheap effects and a lazy script sink this sequel.",
];

/// Words per class: short, medium, and long (512 tokens of this tokenizer is about 400
/// English words).
pub const SHORT_WORDS: usize = 10;
pub const MEDIUM_WORDS: usize = 60;
pub const LONG_WORDS: usize = 400;

/// How many distinct texts of each class the built-in corpus holds.
const PER_CLASS: usize = 32;

/// Which texts a run sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Texts {
    Short,
    Medium,
    Long,
    /// Short, medium and long by weight.
    Mix {
        short: u32,
        medium: u32,
        long: u32,
    },
    /// One text per line of a file.
    File(std::path::PathBuf),
}

impl Texts {
    /// The default mix: mostly short texts, like interactive traffic.
    pub const DEFAULT_MIX: Texts = Texts::Mix {
        short: 6,
        medium: 3,
        long: 1,
    };
}

impl std::str::FromStr for Texts {
    type Err = anyhow::Error;
    /// `short`, `medium`, `long`, `mix` (6:3:1), `mix=S:M:L`, or a file path.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "short" => Texts::Short,
            "medium" => Texts::Medium,
            "long" => Texts::Long,
            "mix" => Texts::DEFAULT_MIX,
            _ if s.starts_with("mix=") => {
                let w: Vec<u32> = s[4..]
                    .split(':')
                    .map(|x| x.parse().context("mix weights are S:M:L integers"))
                    .collect::<anyhow::Result<_>>()?;
                let [short, medium, long] = w[..] else {
                    bail!("mix weights are three integers S:M:L, e.g. mix=6:3:1");
                };
                if short + medium + long == 0 {
                    bail!("mix weights are all 0");
                }
                Texts::Mix {
                    short,
                    medium,
                    long,
                }
            }
            path => Texts::File(path.into()),
        })
    }
}

/// A text of about `words` words made of the built-in sentences, from `rng`.
pub fn text_of_words(words: usize, rng: &mut impl Rng) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(words + 12);
    while out.len() < words.max(1) {
        let s = SENTENCES[rng.random_range(0..SENTENCES.len())];
        out.extend(s.split_whitespace());
    }
    out.truncate(words.max(1));
    out.join(" ")
}

/// The texts of a run and the rule that picks one per request.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// All distinct texts.
    pub texts: Vec<String>,
    /// Per text: its class name (`short`, `medium`, `long`, `file`).
    pub class: Vec<&'static str>,
    /// Cumulative weights over `texts` for the pick.
    cumulative: Vec<u64>,
    seed: u64,
}

impl Corpus {
    pub fn new(texts: &Texts, seed: u64) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut all = Vec::new();
        let mut class = Vec::new();
        let mut weight = Vec::new();
        let mut add_class = |name: &'static str, words: usize, w: u32, rng: &mut ChaCha8Rng| {
            if w == 0 {
                return;
            }
            for _ in 0..PER_CLASS {
                all.push(text_of_words(words, rng));
                class.push(name);
                weight.push(u64::from(w));
            }
        };
        match texts {
            Texts::Short => add_class("short", SHORT_WORDS, 1, &mut rng),
            Texts::Medium => add_class("medium", MEDIUM_WORDS, 1, &mut rng),
            Texts::Long => add_class("long", LONG_WORDS, 1, &mut rng),
            Texts::Mix {
                short,
                medium,
                long,
            } => {
                add_class("short", SHORT_WORDS, *short, &mut rng);
                add_class("medium", MEDIUM_WORDS, *medium, &mut rng);
                add_class("long", LONG_WORDS, *long, &mut rng);
            }
            Texts::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading texts from {}", path.display()))?;
                for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    all.push(line.to_string());
                    class.push("file");
                    weight.push(1);
                }
                if all.is_empty() {
                    bail!("{} has no texts (one per line)", path.display());
                }
            }
        }
        let cumulative = weight
            .iter()
            .scan(0u64, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        Ok(Self {
            texts: all,
            class,
            cumulative,
            seed,
        })
    }

    /// The index of the text of request `i`: a hash of the seed and `i`, so any
    /// request's text is known without drawing the ones before it (closed-loop workers
    /// take indices in any order) and is the same for every backend.
    pub fn pick(&self, i: usize) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = splitmix64(self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) % total;
        self.cumulative.partition_point(|&c| c <= x)
    }

    /// The texts of the first `n` requests.
    pub fn picks(&self, n: usize) -> Vec<usize> {
        (0..n).map(|i| self.pick(i)).collect()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn classes_have_their_lengths() {
        for (t, w) in [
            (Texts::Short, SHORT_WORDS),
            (Texts::Medium, MEDIUM_WORDS),
            (Texts::Long, LONG_WORDS),
        ] {
            let c = Corpus::new(&t, 1).unwrap();
            assert!(c.texts.iter().all(|s| words(s) == w), "{t:?}");
        }
    }

    #[test]
    fn the_mix_follows_its_weights_and_the_seed() {
        let c = Corpus::new(&"mix=6:3:1".parse().unwrap(), 7).unwrap();
        let picks = c.picks(10_000);
        let share = |name| picks.iter().filter(|&&i| c.class[i] == name).count() as f64 / 1e4;
        assert!((share("short") - 0.6).abs() < 0.03);
        assert!((share("medium") - 0.3).abs() < 0.03);
        assert!((share("long") - 0.1).abs() < 0.03);
        let again = Corpus::new(&Texts::DEFAULT_MIX, 7).unwrap();
        assert_eq!(again.texts, c.texts);
        assert_eq!(again.picks(100), c.picks(100));
        let other = Corpus::new(&Texts::DEFAULT_MIX, 8).unwrap();
        assert_ne!(other.picks(100), c.picks(100));
    }

    #[test]
    fn a_file_gives_one_text_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, "good\n\n  bad movie \n").unwrap();
        let c = Corpus::new(&path.to_str().unwrap().parse().unwrap(), 1).unwrap();
        assert_eq!(c.texts, vec!["good", "bad movie"]);
        std::fs::write(&path, "\n").unwrap();
        assert!(Corpus::new(&Texts::File(path), 1).is_err());
        assert!("mix=1:2".parse::<Texts>().is_err());
    }
}
