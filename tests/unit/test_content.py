"""Content triage per class, including the hard cases: each finding named, with its evidence."""

from __future__ import annotations

import pytest

from gateway.decide.route import route_for
from gateway.domain.facts import Facts
from gateway.domain.findings import ContentFindings, Flag, Route, Tone
from gateway.triage import Context, triage
from gateway.triage.content import classify
from gateway.triage.facts import parse_message
from gateway.triage.limits import Limits
from gateway.triage.rules import RuleSet, default_rules_dir, load_rules
from gateway.triage.text import new_text

# Sentences the rules alone route correctly and the learned model (issue #13) gets wrong: a bag of
# n-grams cannot see "next Tuesday" or a joke. Known gaps, stated in the report; strict, so
# a retrained model that fixes one says so here.
MODEL_MISS = pytest.mark.xfail(strict=True, reason="known error of the learned model (rules/models)")

CONTEXT = Context(family=None, family_label="the family", family_count=1, half_term=None, thread_count=1,
                  limits=Limits(family_messages_per_half_term=100, thread_messages=100, long_message_words=10_000))


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(default_rules_dir())


def facts(body: str, subject: str = "", defects: tuple[str, ...] = ()) -> Facts:
    return Facts(message_id=None, subject=subject, from_addr="parent@example.com", from_name="", to=(), cc=(),
                 date=None, in_reply_to=None, references=(), headers={}, text=body, new_text=new_text(body),
                 defects=defects)


def judged(rules: RuleSet, body: str, subject: str = "") -> tuple[Route, ContentFindings]:
    f = facts(body, subject)
    return route_for(triage(f, CONTEXT, rules)), classify(f, rules)


# ---------------------------------------------------------------- routine mail reaches the teacher

@pytest.mark.parametrize("body", [
    "Hi Mr Reid, could Tom change his reading book? He's read this one three times. Thanks, Jo",
    "Dear Miss Fox, what time does the coach get back from the trip today? Thanks",
    "Hello, Maisie loved the Roman day, she hasn't stopped talking about it. Thank you!",
    pytest.param("Hi, Mia came home with someone else's jumper, I'll send it back tomorrow. x",
                 marks=MODEL_MISS),
])
def test_routine_mail_goes_to_staff(rules: RuleSet, body: str) -> None:
    route, found = judged(rules, body)
    assert route is Route.STAFF
    assert found.tone is Tone.NEUTRAL


@pytest.mark.parametrize("body", [
    "We read the latest Ofsted report and were really pleased. Is the parent survey published?",
    "I expect Noah will be a bit tired tomorrow as we're back late from his grandma's.",
    "Jack said he was told off today for talking, which is fair enough! He's a chatterbox.",
    "We're having Mia's birthday party on Saturday, could you pop the invitations in their trays?",
    "The new maths app is killing me, I can't log in! Could you reset the password?",
    pytest.param("I'd like to make a complaint... about the weather! Any news on the new sports day date?",
                 marks=MODEL_MISS),
])
def test_routine_mail_with_alarming_words_stays_with_staff(rules: RuleSet, body: str) -> None:
    assert judged(rules, body)[0] is Route.STAFF


def test_polite_but_firm_request_is_not_negative(rules: RuleSet) -> None:
    route, found = judged(rules, (
        "Dear Mrs Okoro,\n\nI am writing to request a meeting about Sam's support plan before his review. "
        "I would be grateful if you could offer two or three dates before the end of the month, as I "
        "need time to gather the therapist's reports. I would also like to see the records of his "
        "sessions this term.\n\nKind regards,\nAnna Ward"))
    assert route is Route.STAFF
    assert found.tone is Tone.NEUTRAL


def test_chasing_a_reply_politely_is_not_negative(rules: RuleSet) -> None:
    route, _ = judged(rules, "Dear Mr Shah, I know you're very busy but I'd appreciate a reply to my email "
                             "from last week about the reading book when you get a chance. Thanks, Lisa")
    assert route is Route.STAFF


# ---------------------------------------------------------------- worried versus negative

def test_worried_parent_reaches_the_teacher(rules: RuleSet) -> None:
    route, found = judged(rules, "Dear Mrs Ali, I'm really worried about Zac. He's been crying every night and "
                                 "says nobody plays with him at lunch. Is there anything you could try?")
    assert route is Route.STAFF
    assert found.tone is Tone.WORRIED
    assert any(r.flag is Flag.WORRIED and r.evidence == "worried" for r in found.reasons)


def test_negativity_about_another_child_is_not_negative(rules: RuleSet) -> None:
    route, found = judged(rules, "Dear Ms Lee, I'm so angry with the boy who keeps taking Mia's snack, it has "
                                 "happened four times now and he is a menace. Could you have a word with him?")
    assert route is Route.STAFF
    assert found.tone in (Tone.NEUTRAL, Tone.WORRIED)


def test_the_same_anger_aimed_at_staff_is_negative(rules: RuleSet) -> None:
    route, found = judged(rules, "Dear Ms Lee, I'm so angry with you. You promised you'd deal with this and you "
                                 "did nothing. I'm done being polite.")
    assert route is Route.HEAD_OF_SCHOOL
    assert found.tone is Tone.NEGATIVE
    assert any(r.rule == "criticism-of-staff" for r in found.reasons)


def test_child_quoting_a_teacher_does_not_make_the_parent_abusive(rules: RuleSet) -> None:
    route, found = judged(rules, "Hi Miss, Ella came home saying she's stupid and will fail her SATs. She's "
                                 "been in tears. Is there anything we can do at home to help her confidence?")
    assert route is Route.STAFF
    assert found.tone is Tone.WORRIED


def test_ultimatum_and_ofsted_threat_is_negative(rules: RuleSet) -> None:
    route, found = judged(rules, "I have emailed three times with no reply. If I have not heard back by Friday "
                                 "I will be making a formal complaint and contacting Ofsted.")
    assert route is Route.HEAD_OF_SCHOOL
    assert found.tone is Tone.NEGATIVE
    assert {"escalation-threat", "criticism-of-staff"} <= {r.rule for r in found.reasons}


def test_sarcasm_is_negative(rules: RuleSet) -> None:
    route, found = judged(rules, "Oh brilliant, another \"optional\" project that takes the whole weekend. "
                                 "Great planning as always.")
    assert route is Route.HEAD_OF_SCHOOL
    assert found.tone is Tone.NEGATIVE


def test_sarcastic_thanks_with_pointed_phrases_is_negative(rules: RuleSet) -> None:
    route, _ = judged(rules, "Thanks SO much for telling us at 8pm that it's a costume day tomorrow. "
                             "Maybe next time a bit more notice? Just a thought.")
    assert route is Route.HEAD_OF_SCHOOL


def test_sincere_thanks_is_not_sarcasm(rules: RuleSet) -> None:
    route, found = judged(rules, "Thanks so much for all your help this term, she has loved being in your class.")
    assert route is Route.STAFF
    assert found.tone is Tone.NEUTRAL


def test_shouting_is_shown_and_with_a_demand_is_negative(rules: RuleSet) -> None:
    route, found = judged(rules, "WHY WAS I NOT TOLD ABOUT THE DETENTION. I SHOULD HAVE BEEN INFORMED. "
                                 "I WANT AN ANSWER.")
    assert route is Route.HEAD_OF_SCHOOL
    assert Flag.SHOUTING in found.flags


def test_one_capitalised_word_is_not_shouting(rules: RuleSet) -> None:
    _, found = judged(rules, "Zayn has come home without his coat AGAIN, could someone look in lost property?")
    assert Flag.SHOUTING not in found.flags


# ---------------------------------------------------------------- abusive

def test_masked_swearing_is_abusive(rules: RuleSet) -> None:
    route, found = judged(rules, "Who the f*** do you think you are ringing my house?")
    assert route is Route.HEAD_OF_SCHOOL
    assert found.tone is Tone.ABUSIVE
    assert any(r.rule == "masked-swearing" and r.evidence == "f***" for r in found.reasons)


def test_abuse_without_swear_words_is_abusive(rules: RuleSet) -> None:
    route, found = judged(rules, "Mr Dean, I know what car you drive and what time you leave on a Thursday. "
                                 "Think very carefully about how you speak to my son.")
    assert route is Route.HEAD_OF_SCHOOL
    assert found.tone is Tone.ABUSIVE
    assert any(r.rule == "threat-to-staff" for r in found.reasons)


def test_insult_to_a_teacher_is_abusive(rules: RuleSet) -> None:
    _, found = judged(rules, "You're a nasty, vindictive woman and everyone at the gate knows it.")
    assert found.tone is Tone.ABUSIVE


def test_mild_swearing_about_a_lost_coat_is_not_abusive(rules: RuleSet) -> None:
    route, found = judged(rules, "He's lost his bloody coat again! Could someone check lost property please?")
    assert route is Route.STAFF
    assert found.tone is not Tone.ABUSIVE


# ---------------------------------------------------------------- urgent

def test_absence_today_goes_to_the_office(rules: RuleSet) -> None:
    route, found = judged(rules, "Morning, Poppy has been up all night being sick so she's staying home today.")
    assert route is Route.OFFICE
    assert any(r.rule == "absence-today" for r in found.reasons)


@pytest.mark.parametrize("body", [
    "Hi Mr Singh, Jack has a dentist appointment at 2.15 today, I'll collect him from reception at 1.45.",
    "Just letting you know my mum is collecting Freya today instead of me.",
    "Sam left his EpiPen at home today, I'm bringing it to reception now.",
    "hi sorry jayden not in today he was sick in the night x",
])
def test_same_day_matters_go_to_the_office(rules: RuleSet, body: str) -> None:
    assert judged(rules, body)[0] is Route.OFFICE


@pytest.mark.parametrize("body", [
    "Ruby was sick last month with a chest infection and missed fractions. Could we catch up at home?",
    "I'm sick of nagging Leo about homework! Any tips?",
    pytest.param("Chloe says she feels sick most mornings before school. Could someone have a chat with her?",
                 marks=MODEL_MISS),
    pytest.param("Ben has an orthodontist appointment next Tuesday at 11, I'll sign him out at reception.",
                 marks=MODEL_MISS),
])
def test_sick_in_other_senses_is_not_urgent(rules: RuleSet, body: str) -> None:
    _, found = judged(rules, body)
    assert Flag.URGENT not in found.flags


# ---------------------------------------------------------------- safeguarding

@pytest.mark.parametrize("body", [
    "I'm not sure if I should mention this, but Kai said his mum's boyfriend hurts him and he's scared of going home.",
    "Holly said a man at the pool asked her to come and see his puppies in his car. I didn't know who else to tell.",
    "I found she's been making herself sick after meals so she can be thin. I'm scared.",
    "My son has been chatting to someone on Roblox who says he's 13, and he keeps asking him to turn his webcam on.",
    "I wasn't going to say anything, but Lily told me her uncle touches her when he babysits.",
    "Josh came back from his dad's with a bruise on his cheek and said he fell, but he didn't want to talk about it.",
    "My ex turned up drunk last night and was threatening me in front of the kids.",
])
def test_hesitant_and_direct_disclosures_go_to_the_dsl(rules: RuleSet, body: str) -> None:
    route, found = judged(rules, body)
    assert route is Route.DSL
    assert all(r.rule and r.evidence for r in found.reasons if r.flag is Flag.SAFEGUARDING)


def test_safeguarding_outranks_hostility(rules: RuleSet) -> None:
    route, found = judged(rules, "NOBODY at this school has listened. His stepdad has been hitting him and I "
                                 "expect someone to ring me TODAY.")
    assert route is Route.DSL
    assert found.tone is Tone.NEGATIVE


@pytest.mark.parametrize("body", [
    "Evie fell out with her friends and doesn't want to go in tomorrow. Could you keep an eye on her?",
    "A boy in his class keeps pushing him in the line and he's upset. Could you look into it?",
    "Ollie was hit by a ball in PE and has a bruise on his forehead, just so you know.",
    "She comes out of school starving so could she have her snack earlier?",
    "My husband and I are separating and Lily is finding it hard. Please let us know if you notice anything.",
])
def test_ordinary_worries_do_not_go_to_the_dsl(rules: RuleSet, body: str) -> None:
    assert judged(rules, body)[0] is not Route.DSL


# ---------------------------------------------------------------- personal

@pytest.mark.parametrize("body", [
    "Hi Mr Cole, fancy a drink after work on Friday? No pressure! x",
    "Could I have your mobile number so I can WhatsApp you about Lily?",
    "I've just launched my own nail business and I'm doing 20% off for all staff!",
    "Random question but are you single? My friend saw you at the disco x",
    "Bit of gossip for you - apparently Kayla's mum is having an affair with the swim coach!",
])
def test_personal_mail_goes_to_the_head(rules: RuleSet, body: str) -> None:
    route, found = judged(rules, body)
    assert route is Route.HEAD_OF_SCHOOL
    assert Flag.PERSONAL in found.flags
    assert found.tone is Tone.NEUTRAL


def test_offer_to_help_in_school_is_not_personal(rules: RuleSet) -> None:
    assert judged(rules, "I'm free on Thursday mornings now if you ever need a parent helper for reading.")[0] \
        is Route.STAFF


# ---------------------------------------------------------------- only new text counts

def test_thank_you_above_a_quoted_hostile_thread_goes_to_staff(rules: RuleSet) -> None:
    body = ("Thank you for sorting this out so quickly, much appreciated.\n\n"
            "On Tue, 4 Mar 2026 at 18:02, Mrs Wood <wood@school.sch.uk> wrote:\n"
            "> I'm sorry you feel that way.\n>\n"
            "> > You useless lot. This is a disgrace and I'm going to Ofsted and my solicitor.\n"
            "> > His stepdad hits him and I expect a call today.\n")
    route, found = judged(rules, body, subject="Re: complaint")
    assert route is Route.STAFF
    assert found.reasons == ()


def test_reply_subject_does_not_count(rules: RuleSet) -> None:
    route, _ = judged(rules, "Thanks, see you then.", subject="Re: Absence today - off sick")
    assert route is Route.STAFF


def test_html_only_mail_is_classified(rules: RuleSet) -> None:
    raw = (b"From: p@example.com\r\nDate: Tue, 10 Nov 2026 20:14:00 +0000\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Dear Mrs Smith,</p>"
           b"<p>This is <b>not good enough</b>. I expect a phone call tomorrow.</p></body></html>")
    f = parse_message(raw)
    assert f.html_only
    assert route_for(triage(f, CONTEXT, rules)) is Route.HEAD_OF_SCHOOL


# ---------------------------------------------------------------- languages

def test_non_english_mail_is_flagged_and_goes_to_staff(rules: RuleSet) -> None:
    route, found = judged(rules, "Dzień dobry, Ola ma nowe okulary i pyta, czy może siedzieć bliżej tablicy. "
                                 "Dziękuję bardzo za pomoc. Pozdrawiam, Anna Kowalska")
    assert route is Route.STAFF
    assert Flag.NON_ENGLISH in found.flags
    assert found.language == "pl"


def test_non_english_absence_is_still_urgent(rules: RuleSet) -> None:
    route, found = judged(rules, "Buna ziua, Ana nu va veni azi la scoala, are febra si o doare gatul. "
                                 "Multumesc frumos pentru intelegere.")
    assert route is Route.OFFICE
    assert {Flag.URGENT, Flag.NON_ENGLISH} <= found.flags


def test_non_english_disclosure_goes_to_the_dsl(rules: RuleSet) -> None:
    route, _ = judged(rules, "Olá professora, a minha filha disse que o padrasto bate nela quando eu não estou "
                             "em casa. Não sei o que fazer.")
    assert route is Route.DSL


def test_short_text_is_not_language_checked(rules: RuleSet) -> None:
    _, found = judged(rules, "Merci beaucoup!")
    assert found.language is None
    assert Flag.NON_ENGLISH not in found.flags


# ---------------------------------------------------------------- unreadable mail

def test_undecodable_body_is_a_finding_and_still_routed(rules: RuleSet) -> None:
    f = facts("Sorry, Maya won't be in today, she has a temp\ufffd\ufffdrature.",
              defects=("bad-charset", "undecodable-body", "missing-date"))
    found = classify(f, rules)
    assert {"bad-charset", "undecodable-body", "missing-date"} <= {r.rule for r in found.reasons}
    assert route_for(triage(f, CONTEXT, rules)) is Route.OFFICE


def test_empty_body_is_a_finding(rules: RuleSet) -> None:
    found = classify(facts(""), rules)
    assert [r.rule for r in found.reasons] == ["empty-body"]
    assert found.tone is Tone.NEUTRAL


def test_every_reason_has_a_kebab_case_rule_and_evidence(rules: RuleSet) -> None:
    _, found = judged(rules, "You lot are bloody useless and I'll be contacting Ofsted. WHY IS NOBODY LISTENING!!!")
    assert found.reasons
    for reason in found.reasons:
        assert reason.rule == reason.rule.lower() and " " not in reason.rule
        assert reason.evidence


# ---------------------------------------------------------------- safeguarding in unseen wording
# Written after the held-out set, in wording no rule example uses: each needs either one strong
# indicator or two different weak ones (injury + evasion, hunger + hygiene, fear + hiding...).

@pytest.mark.parametrize("body", [
    "Hi, when Ruby stayed at ours I noticed bruises on her arms and she didn't want to say how she got them.",
    "When I was doing Maisie's hair I found a bald patch and she said her stepdad pulled her hair out.",
    "Jade told me yesterday she has been thinking about killing herself. Please keep an eye on her.",
    "He came back from his weekend with a swollen eye, wouldn't say what happened and flinches when I lift my hand.",
    "The boy next door is always ravenous when he comes round and his clothes smell.",
    "My partner has been leaving the kids on their own while I'm at work so he can go to the pub.",
    "Someone older on his headset was telling him to take his top off on camera.",
    "A man has been asking my son on Discord what colour his underwear is and whether we check his phone.",
    "Some boys have been filming a girl in the changing rooms and sharing it round.",
    "Her family have chosen a husband for her and she has no say, she is 15.",
    "She says she is going to be 'cut' when she visits her aunt in Somalia this summer.",
    "My nephew keeps saying immigrants are vermin and he wants to do something about it.",
    "He keeps coming home with wads of cash and two phones and says he owes some older lads.",
    "My ex has just been released from prison and there is a court order saying he can't collect her.",
])
def test_safeguarding_in_unseen_wording_reaches_the_dsl(rules: RuleSet, body: str) -> None:
    route, found = judged(rules, body)
    assert route is Route.DSL, [(r.rule, r.evidence) for r in found.reasons]


@pytest.mark.parametrize("body", [
    "Finn bumped his head on the climbing frame yesterday, he has a little bruise but he's fine.",
    "Mason is absolutely starving when he gets home, is he eating his lunch?",
    "Ruby has been quite clingy since her nan passed away, she might be a bit quiet this week.",
    "He's got a black eye from a football to the face at training, honestly he's fine!",
    "Oscar keeps asking about the Nazis since your WW2 topic, any good books for his age?",
    "Can Liam walk home on his own from next week? He's in Year 6 and we've practised the route.",
    "I sent the photos to the school office yesterday, did they arrive?",
    "I could strangle him, that's the third coat he's lost this term!",
    "Her dad pushed her on the swings for an hour at the weekend, she loved it.",
])
def test_routine_mail_with_warning_words_stays_off_the_dsl(rules: RuleSet, body: str) -> None:
    assert judged(rules, body)[0] is not Route.DSL


def test_a_missing_date_is_malformed_while_an_undecodable_body_is_unreadable(rules: RuleSet) -> None:
    no_date = parse_message(b"From: p@example.com\r\nTo: t@school.example\r\nSubject: PE\r\n\r\nIs PE on Friday?\r\n")
    flags = {r.flag for r in classify(no_date, rules).reasons}
    assert Flag.MALFORMED in flags and Flag.UNREADABLE not in flags
    bad = parse_message(b"From: p@example.com\r\nTo: t@school.example\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
                        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nCaf\xe9 tomorrow?\r\n")
    assert Flag.UNREADABLE in {r.flag for r in classify(bad, rules).reasons}
