"""The extractive chat model: answers with the best retrieved passage, verbatim. No LLM."""

from __future__ import annotations

from kefu.ports import AnswerContext, ModelAnswer
from kefu.replies import PASSAGE_LEAD

_MAX_CHARS = 700


class ExtractiveModel:
    """Quotes the knowledge base instead of generating: nothing it says can be made up."""

    name = "extractive"

    def answer(self, context: AnswerContext) -> ModelAnswer:
        best = context.hits[0].chunk
        if best.kind == "faq":
            return ModelAnswer(text=best.text, model=self.name)
        body = best.text.strip()
        if len(body) > _MAX_CHARS:
            cut = max(body.rfind(mark, 0, _MAX_CHARS) for mark in ("。", ". ", "\n"))
            body = body[: cut + 1 if cut > 0 else _MAX_CHARS].rstrip() + " …"
        title = best.title + (f" · {best.section}" if best.section else "")
        lead = PASSAGE_LEAD[context.language].format(title=title)
        return ModelAnswer(text=f"{lead}\n{body}", model=self.name)
