"""Candidate solutions of the workshop challenge, shared by the grader tests and the benchmark.

``ORIGINAL`` is the workshop's buggy starting point as the issue describes it (written here from
that description: it divides by ``len(users)``, sorts ascending and takes the last five, adds
``engagement_score`` to the input, and indexes keys directly). ``CLEAN`` is a correct solution
written to make single bugs easy to put back; ``ONE_BUG_VARIANTS`` each put back one bug.
"""

from __future__ import annotations

ORIGINAL = '''
def calculate_user_metrics(users, start_date, end_date):
    """Engagement metrics for the users active between two dates."""
    total = 0
    active = []
    for user in users:
        if user['last_login'] >= start_date and user['last_login'] <= end_date:
            score = user['posts'] * 2 + user['comments'] * 1.5 + user['likes'] * 0.1
            user['engagement_score'] = score / user['days_active']
            total += score
            active.append(user)
    average = total / len(users)
    top = sorted(active, key=lambda u: u['engagement_score'])[-5:]
    return {'average_engagement': average, 'top_performers': top, 'active_count': len(active)}
'''

CLEAN = '''
def calculate_user_metrics(users, start_date, end_date):
    """Engagement metrics for the users whose last login lies in [start_date, end_date]."""
    if not isinstance(users, list) or start_date > end_date:
        return {'average_engagement': 0, 'top_performers': [], 'active_count': 0}
    active = []
    for user in users:
        login = user.get('last_login')
        if not isinstance(login, str) or not start_date <= login <= end_date:
            continue
        try:
            posts = float(user.get('posts') or 0)
            comments = float(user.get('comments') or 0)
            likes = float(user.get('likes') or 0)
            days = float(user.get('days_active') or 0)
        except (TypeError, ValueError):
            continue
        score = posts * 2 + comments * 1.5 + likes * 0.1
        engagement = score / days if days > 0 else 0
        active.append((engagement, user))
    if not active:
        return {'average_engagement': 0, 'top_performers': [], 'active_count': 0}
    average = sum(e for e, _ in active) / len(active)
    ranked = sorted(active, key=lambda pair: pair[0], reverse=True)
    top = [dict(user) for _, user in ranked[:5]]
    return {'average_engagement': average, 'top_performers': top, 'active_count': len(active)}
'''

# A thorough solution of the kind a good model writes (heapq, validation, copies).
THOROUGH = '''
import heapq


def calculate_user_metrics(users, start_date, end_date):
    """Engagement metrics for the users whose last login lies in [start_date, end_date]."""
    empty = {'average_engagement': 0, 'top_performers': [], 'active_count': 0}
    if not isinstance(users, list):
        return empty
    if not isinstance(start_date, str) or not isinstance(end_date, str):
        return empty
    if start_date > end_date:
        return empty
    scored = []
    for user in users:
        if not isinstance(user, dict):
            continue
        last_login = user.get('last_login')
        if not isinstance(last_login, str) or not start_date <= last_login <= end_date:
            continue
        counts = []
        for key in ('posts', 'comments', 'likes', 'days_active'):
            value = user.get(key, 0)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    value = 0
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                value = 0
            counts.append(value)
        posts, comments, likes, days = counts
        score = posts * 2 + comments * 1.5 + likes * 0.1
        engagement = score / days if days > 0 else 0
        scored.append((engagement, len(scored), user))
    if not scored:
        return empty
    average = sum(e for e, _, _ in scored) / len(scored)
    best = heapq.nlargest(5, scored, key=lambda t: (t[0], -t[1]))
    top = [dict(u, engagement_score=e) for e, _, u in best]
    return {'average_engagement': average, 'top_performers': top, 'active_count': len(scored)}
'''

DO_NOTHING = """
def calculate_user_metrics(users, start_date, end_date):
    return {'average_engagement': 0, 'top_performers': [], 'active_count': 0}
"""

# The same do-nothing answer, wrapped in objects that claim to be whatever the grader wants.
DO_NOTHING_SNEAKY = """
class Anything:
    def __eq__(self, other):
        return True
    def __sub__(self, other):
        return 0
    def __len__(self):
        return 5
    def __getitem__(self, index):
        return Anything()
    def __iter__(self):
        return iter([Anything() for _ in range(5)])
    def get(self, key, default=None):
        return Anything()


class Sneaky(dict):
    def get(self, key, default=None):
        return Anything()
    def __eq__(self, other):
        return True
    def __len__(self):
        return 3


class SneakyList(list):
    def __len__(self):
        return 2
    def __getitem__(self, index):
        return Anything()


def calculate_user_metrics(users, start_date, end_date):
    return Sneaky(average_engagement=0, top_performers=SneakyList(), active_count=0)
"""

TESTS = (
    "handles_division_by_zero",
    "handles_empty_users_list",
    "handles_missing_keys",
    "correct_average_calculation",
    "correct_sorting_direction",
    "handles_no_active_users",
    "doesnt_mutate_input",
    "handles_less_than_5_users",
    "handles_invalid_dates",
    "robust_error_handling",
    "efficient_implementation",
)
"""The eleven tests, in report order; the score tuples below follow it."""

ORIGINAL_SCORES = (0, 0, 0, 0, 0, 10, 0, 5, 5, 2, 8)
DO_NOTHING_SCORES = (20, 15, 15, 5, 0, 10, 8, 0, 5, 7, 2)
FULL_SCORES = (20, 15, 15, 15, 10, 10, 8, 5, 5, 7, 10)


def _variant(*edits: tuple[str, str]) -> str:
    code = CLEAN
    for old, new in edits:
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    return code


# name: (code, per-test scores worked out by hand from the workshop's rules)
ONE_BUG_VARIANTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "divides_by_all_users": (
        _variant(("/ len(active)", "/ len(users)")),
        (20, 15, 15, 5, 10, 10, 8, 5, 5, 7, 10),
    ),
    "sorts_ascending_takes_last_five": (
        _variant(("pair[0], reverse=True)", "pair[0])"), ("ranked[:5]", "ranked[-5:]")),
        (20, 15, 15, 15, 0, 10, 8, 5, 5, 7, 8),
    ),
    "mutates_input": (
        _variant(
            (
                "active.append((engagement, user))",
                "user['engagement_score'] = engagement\n        active.append((engagement, user))",
            )
        ),
        (20, 15, 15, 15, 10, 10, 0, 5, 5, 7, 10),
    ),
    "divides_by_zero_days": (
        _variant(("score / days if days > 0 else 0", "score / days")),
        (0, 15, 0, 15, 10, 10, 8, 5, 5, 7, 10),
    ),
    "indexes_keys_directly": (
        _variant(
            ("user.get('posts')", "user['posts']"),
            ("user.get('comments')", "user['comments']"),
            ("user.get('likes')", "user['likes']"),
            ("user.get('days_active')", "user['days_active']"),
        ),
        (20, 15, 0, 15, 10, 10, 8, 5, 5, 7, 10),
    ),
    "divides_by_zero_without_active_users": (
        _variant(
            (
                "    if not active:\n        return {'average_engagement': 0, "
                "'top_performers': [], 'active_count': 0}\n",
                "",
            )
        ),
        (20, 0, 15, 15, 10, 0, 8, 5, 5, 7, 10),
    ),
    "returns_none_for_empty_list": (
        _variant(
            (
                '"""\n    if not isinstance',
                '"""\n    if not users:\n        return None\n    if not isinstance',
            )
        ),
        (20, 5, 15, 15, 10, 10, 8, 5, 5, 7, 10),
    ),
    "returns_every_active_user": (
        _variant(("ranked[:5]", "ranked")),
        (20, 15, 15, 15, 10, 10, 8, 5, 5, 7, 0),
    ),
    "adds_text_posts": (
        _variant(("posts = float(user.get('posts') or 0)", "posts = user.get('posts') or 0")),
        (20, 15, 15, 15, 10, 10, 8, 5, 5, 4, 10),
    ),
    "forgets_days_active": (
        _variant(("engagement = score / days if days > 0 else 0", "engagement = score")),
        (20, 15, 15, 5, 10, 10, 8, 5, 5, 7, 10),
    ),
}
