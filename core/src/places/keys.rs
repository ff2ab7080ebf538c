//! Keys a place is found by: the normalised forms of names and aliases that `ab.hierarchy`'s
//! `lookup_keys` column holds (filled by `ab.place_keys`), and the candidate keys a text or an
//! entity array offers, so the pgrx layer can look them all up with one indexed query.

/// Normalised text for comparisons: lower case, punctuation dropped, spaces collapsed.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '\''))
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// How a name (or a 'where' entity's text) is looked up among place names and aliases: the
/// normalised text without a leading "the ".
pub fn place_key(text: &str) -> String {
    let n = normalize(text);
    n.strip_prefix("the ").map(str::to_string).unwrap_or(n)
}

/// The lookup keys of a place: its name's and each alias's, without blanks or repeats, the name's
/// first (`ab.place_keys(name, aliases)`, which fills `ab.hierarchy.lookup_keys`).
pub fn place_keys<'a>(name: Option<&str>, aliases: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut keys: Vec<String> = name.into_iter().map(place_key).collect();
    for a in aliases {
        let k = place_key(a);
        if !k.is_empty() && !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// Every run of up to four capitalised words in `content`, as keys, sorted and without repeats:
/// the places the rule-based extractor may find, looked up together before it runs.
pub fn capitalised_runs(content: &str) -> Vec<String> {
    let words: Vec<&str> = content.split_whitespace().collect();
    let capitalised = |w: &str| w.chars().next().is_some_and(char::is_uppercase);
    let mut keys = Vec::new();
    for i in 0..words.len() {
        if !capitalised(words[i]) {
            continue;
        }
        for len in 1..=4.min(words.len() - i) {
            if !capitalised(words[i + len - 1]) {
                break;
            }
            keys.push(place_key(&words[i..i + len].join(" ")));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("  Washington,  D.C. "), "washington d c");
        assert_eq!(place_key("the United States"), "united states");
    }

    #[test]
    fn keys_of_a_place() {
        assert_eq!(place_keys(Some("The Hague"), ["Den Haag", "", "the hague"]), ["hague", "den haag"]);
        assert_eq!(place_keys(None, ["NYC"]), ["nyc"]);
    }

    #[test]
    fn runs_of_capitalised_words() {
        assert_eq!(
            capitalised_runs("Flights from New York City to Paris. on Monday"),
            ["flights", "monday", "new", "new york", "new york city", "paris", "york", "york city", "city"]
                .iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(capitalised_runs("").is_empty());
    }
}
