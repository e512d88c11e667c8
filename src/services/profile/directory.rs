//! The user directory: a word index of every local user's ID and display name, kept in the
//! same batch as each profile change, so search reads a few index ranges and never scans
//! all users. Words are normalized (compatibility-decomposed, accents dropped, lower case),
//! so "Zoë" is found by "zoe".

use std::collections::{BTreeMap, BTreeSet};

use kith_storage::{Batch, Storage, catalog};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::Profile;
use crate::services::error::Result;

/// The most index entries one search word reads; a word that matches more (a single
/// letter on a big server) gives the first ones, and the search says it was limited.
const MAX_CANDIDATES: usize = 500;
/// The most words of a search term looked up.
const MAX_TERMS: usize = 8;

/// `text` folded for matching: no accents, lower case.
pub fn normalize(text: &str) -> String {
    text.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The normalized words of `text`, split at anything not a letter or digit.
pub fn words_of(text: &str) -> impl Iterator<Item = String> {
    normalize(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// What a user is found by: their localpart whole and in words, and their display name's
/// words.
fn index_words(user_id: &str, profile: &Profile) -> BTreeSet<String> {
    let localpart = user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    let mut words: BTreeSet<String> = words_of(localpart).collect();
    words.insert(normalize(localpart));
    if let Some(name) = &profile.displayname {
        words.extend(words_of(name));
    }
    words
}

/// Updates the index in `batch` for a profile going from `old` to `new`.
pub fn reindex(
    batch: &mut Batch,
    user_id: &str,
    old: Option<&Profile>,
    new: &Profile,
) -> kith_storage::Result<()> {
    let before = old.map(|p| index_words(user_id, p)).unwrap_or_default();
    let after = index_words(user_id, new);
    for word in before.difference(&after) {
        batch.delete(&catalog::WORD_USERID, &(word.as_str(), user_id))?;
    }
    for word in after.difference(&before) {
        batch.put(&catalog::WORD_USERID, &(word.as_str(), user_id), &())?;
    }
    Ok(())
}

/// Keeps another server's user's profile as their member events show it, and indexes it,
/// in `batch`: the directory finds them while they share a room with the searcher.
pub fn index_remote(
    storage: &Storage,
    batch: &mut Batch,
    user_id: &str,
    content: &serde_json::Value,
) -> kith_storage::Result<()> {
    let old: Option<Profile> = storage.get(&catalog::USERID_PROFILE, &user_id)?;
    let text = |field: &str| {
        content
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let new = Profile {
        displayname: text("displayname"),
        avatar_url: text("avatar_url"),
        fields: Default::default(),
    };
    reindex(batch, user_id, old.as_ref(), &new)?;
    batch.put(&catalog::USERID_PROFILE, &user_id, &new)
}

/// A match, best first: how many words matched exactly (not only as a prefix).
pub struct Hit {
    pub user_id: String,
    pub exact_words: usize,
}

/// The users matching every word of `term` as a word prefix, best first, and whether the
/// candidates were cut short.
pub fn search(storage: &Storage, term: &str) -> Result<(Vec<Hit>, bool)> {
    // A full user ID is searched by its localpart (server names are not indexed).
    let term = match term.trim().strip_prefix('@') {
        Some(id) => id.split(':').next().unwrap_or_default(),
        None => term,
    };
    // Each word once, and only the first few: every word is an index scan.
    let mut terms: Vec<String> = Vec::new();
    for word in words_of(term) {
        if !terms.contains(&word) && terms.len() < MAX_TERMS {
            terms.push(word);
        }
    }
    let mut limited = false;
    // user → exact matches, intersected over the terms.
    let mut found: Option<BTreeMap<String, usize>> = None;
    for term in &terms {
        let rows: Vec<((String, String), ())> =
            storage.scan_text_prefix(&catalog::WORD_USERID, term, MAX_CANDIDATES)?;
        limited |= rows.len() >= MAX_CANDIDATES;
        let mut these: BTreeMap<String, usize> = BTreeMap::new();
        for ((word, user), ()) in rows {
            *these.entry(user).or_default() += usize::from(word == *term);
        }
        found = Some(match found {
            None => these,
            Some(before) => before
                .into_iter()
                .filter_map(|(user, exact)| these.get(&user).map(|more| (user, exact + more)))
                .collect(),
        });
    }
    let mut hits: Vec<Hit> = found
        .unwrap_or_default()
        .into_iter()
        .map(|(user_id, exact_words)| Hit {
            user_id,
            exact_words,
        })
        .collect();
    hits.sort_by(|a, b| {
        b.exact_words
            .cmp(&a.exact_words)
            .then(a.user_id.cmp(&b.user_id))
    });
    Ok((hits, limited))
}

/// The `global_value` key recording that every profile is in the index (databases from
/// before the directory get it built once at start).
const INDEXED_KEY: &str = "user_directory_indexed";

/// Builds the index from all profiles, once.
pub fn ensure_indexed(storage: &Storage) -> kith_storage::Result<()> {
    if storage
        .get::<_, bool>(&catalog::GLOBAL_VALUE, &INDEXED_KEY)?
        .is_some()
    {
        return Ok(());
    }
    let profiles: Vec<(String, Profile)> = storage.scan_prefix(&catalog::USERID_PROFILE, &())?;
    let mut batch = storage.batch();
    for (user_id, profile) in &profiles {
        reindex(&mut batch, user_id, None, profile)?;
    }
    batch.put(&catalog::GLOBAL_VALUE, &INDEXED_KEY, &true)?;
    storage.commit_blocking(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_accents() {
        assert_eq!(normalize("Zoë ÅSA Ñandú"), "zoe asa nandu");
        let words: Vec<String> = words_of("Jean-Luc  Picard_2").collect();
        assert_eq!(words, ["jean", "luc", "picard", "2"]);
    }
}
