"""WordNet without a download: NLTK's corpus if present, else Debian's files.

Order of preference:
  1. NLTK's own `wordnet` corpus, if it is on `nltk.data.path` (a user who ran
     `nltk.download("wordnet")` once, while online).
  2. An NLTK-readable copy of WordNet 3.0 built from the files of Debian's
     `wordnet-base` and `wordnet-sense-index` packages (/usr/share/wordnet) in
     `<cache>/nltk_data/corpora/wordnet`. Debian does not ship the `lexnames`
     file that NLTK needs; it is written from the table in lexnames(5WN).
  3. Otherwise `WordNetUnavailable`, naming both ways to get WordNet.

Nothing is downloaded at run time.
"""

import functools
import os
import shutil
import warnings

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from wsnn import io_utils

SYSTEM_DIR = "/usr/share/wordnet"

# The 45 lexicographer files of WordNet 3.0, in file-number order (lexnames(5WN)).
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl").split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_REQUIRED = tuple(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")) + (
    "noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense")
_OPTIONAL = ("cntlist.rev",)


class WordNetUnavailable(RuntimeError):
    """Neither NLTK's wordnet corpus nor Debian's WordNet files were found."""


def default_cache_dir():
    """`$WSNN_CACHE`, else `$XDG_CACHE_HOME/wsnn`, else `~/.cache/wsnn`."""
    if os.environ.get("WSNN_CACHE"):
        return os.environ["WSNN_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "wsnn")


def lexnames_text():
    """The `lexnames` file NLTK needs: `NN<TAB>name<TAB>category` lines."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n"
                   for i, name in enumerate(_LEXNAMES))


def build_corpus(system_dir, cache_dir):
    """Copies Debian's WordNet files into an NLTK corpus directory (once).

    Returns:
      The `.../nltk_data/corpora/wordnet` directory.
    """
    target = os.path.join(cache_dir, "nltk_data", "corpora", "wordnet")
    if os.path.isfile(os.path.join(target, "lexnames")):
        return target
    missing = [n for n in _REQUIRED if not os.path.isfile(os.path.join(system_dir, n))]
    if missing:
        raise FileNotFoundError(f"{system_dir}: missing {', '.join(missing)}")
    with io_utils.atomic_directory(target) as tmp:
        for name in _REQUIRED + _OPTIONAL:
            source = os.path.join(system_dir, name)
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(tmp, name))
        with open(os.path.join(tmp, "lexnames"), "w") as f:
            f.write(lexnames_text())
    return target


def _reader(root):
    # Debian's WordNet has no Open Multilingual Wordnet; we use English only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return WordNetCorpusReader(root, None)


@functools.lru_cache(maxsize=None)
def get_wordnet(cache_dir=None, system_dir=SYSTEM_DIR, use_nltk_data=True):
    """Returns an NLTK `WordNetCorpusReader`, found or built without network.

    Args:
      cache_dir: where a corpus built from `system_dir` is kept
        (default: `default_cache_dir()`).
      system_dir: Debian's WordNet directory.
      use_nltk_data: look for NLTK's own corpus first.

    Raises:
      WordNetUnavailable: with both ways to get WordNet.
    """
    if use_nltk_data:
        try:
            root = nltk.data.find("corpora/wordnet")
            return _reader(root)
        except LookupError:
            pass
    cache_dir = cache_dir or default_cache_dir()
    try:
        root = build_corpus(system_dir, cache_dir)
    except (FileNotFoundError, OSError) as e:
        raise WordNetUnavailable(
            f"WordNet not found: no NLTK 'wordnet' corpus on nltk.data.path and no usable "
            f"WordNet files in {system_dir} ({e}). Install Debian's packages "
            f"(`apt-get install wordnet-base wordnet-sense-index`) or, while online, run "
            f"`python -m nltk.downloader wordnet`.") from None
    # NLTK only reads corpora below a directory on nltk.data.path.
    data_dir = os.path.join(cache_dir, "nltk_data")
    if data_dir not in nltk.data.path:
        nltk.data.path.append(data_dir)
    return _reader(nltk.data.FileSystemPathPointer(root))
