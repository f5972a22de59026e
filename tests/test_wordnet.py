"""Tests for the offline WordNet provider (wsnn.wordnet)."""

import pytest

from wsnn import wordnet


def test_lexnames_has_45_entries_with_categories():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_builds_corpus_from_debian_files(tmp_path):
    reader = wordnet.get_wordnet(cache_dir=str(tmp_path), use_nltk_data=False)
    corpus = tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (corpus / "lexnames").read_text() == wordnet.lexnames_text()
    assert reader.morphy("dresses", "n") == "dress"
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    # SemCor counts come through cntlist.rev (needed for information content).
    assert reader.synset("dog.n.01").lemmas()[0].count() > 0


def test_missing_wordnet_names_both_ways(tmp_path):
    with pytest.raises(wordnet.WordNetUnavailable) as e:
        wordnet.get_wordnet(cache_dir=str(tmp_path / "cache"), system_dir=str(tmp_path / "none"),
                            use_nltk_data=False)
    message = str(e.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in message
    assert "nltk.downloader wordnet" in message
    assert not (tmp_path / "cache" / "nltk_data" / "corpora" / "wordnet").exists()
