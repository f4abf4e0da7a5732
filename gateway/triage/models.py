"""The two small offline models triage uses: VADER sentiment and py3langid language identification.

Both ship their data inside their PyPI packages; nothing is downloaded. They are loaded once per
rule set (loading the language model takes most of a second), never per message. No I/O here
beyond reading the packages' own model files at construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from py3langid.langid import MODEL_FILE, LanguageIdentifier
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


@dataclass(frozen=True)
class LanguageGuess:
    """The most likely language and how likely English is (both from normalised probabilities)."""

    language: str
    confidence: float
    english: float


class Models:
    """Sentiment of a sentence and the language of a text."""

    def __init__(self) -> None:
        self._sentiment = SentimentIntensityAnalyzer()
        self._languages = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def sentiment(self, sentence: str) -> float:
        """VADER's compound score, from -1 (most negative) to +1 (most positive)."""
        return float(self._sentiment.polarity_scores(sentence)["compound"])

    def language(self, text: str) -> LanguageGuess:
        ranked = self._languages.rank(text)
        english = next((float(score) for language, score in ranked if language == "en"), 0.0)
        return LanguageGuess(language=str(ranked[0][0]), confidence=float(ranked[0][1]), english=english)
