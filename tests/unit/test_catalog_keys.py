"""Shot keys and prices pinned across catalog changes.

The keys below were computed by the catalog before it became data-driven field specs
(commit "Pin the shot keys ..."). A key names a paid clip in the cache: if a refactor of the
catalog moved one, every existing project would pay again for clips it already has.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from kling_render.plan.plan import shot_key
from kling_render.project.loader import load_project
from kling_render.project.project import cost_of

REPO = Path(__file__).resolve().parents[2]
MUG = REPO / "projects" / "mug-teaser" / "project.yaml"
VARIETY = Path(__file__).parents[1] / "data" / "key_variety.yaml"

MUG_KEYS = {
    "local": {
        "intro": "45fd88b010afc80d25a391e54c597d8296f242649837d77a37796c2fc702b216",
        "pour": "706e19d549cc883304c33c045d688bfcca62342fc6670c79ccf89e8ac221ddce",
        "hero": "3d47138fb03a5101b9f049ef08ece1a582e0d9589638b509888fb49ccc741b01",
        "story": "bf9fcf27643da0fef6eb93b9fbb4bb25cf0a09d2815324b9524e2875ef267d4f",
        "outro": "4cceff3e22803245116bdaa50233edbc9dc1db4a5216ebe9d5583ca25f641ddd",
    },
    # fal's keys (its wire names and forms: start_image_url, durations as text...), pinned when fal came.
    "fal": {
        "intro": "ddeca675cced14ce7544c5b17daa1de274f8e366a0951a8935c922b61a9b8335",
        "pour": "0462a6e5f41441e57769def972cf4c44da22cf4e3e6b8f04807703c8de6530c5",
        "hero": "717b61ad85e3d1e4681943528f1ec0232c865527393ca763c287379ef6e45162",
        "story": "0f7357b540c6ea712244529abb53ab0e6dd8059beacefb9db72324e55480cb32",
        "outro": "b4da7e610400e3a74f0d88f840777987292f014704a148f5903eace7c91bbcd0",
    },
    "wavespeed": {
        "intro": "f7e776046fb41141a41b7c8ff3d84ddf5efa689f1e0865deb7fa2d1fd890fe6b",
        "pour": "eb9e7f2db3de67048155cb198ff2edc5d886a8ba7b57d5642d1d614b921bf48f",
        "hero": "b88010d8d4d6cc62f621c370ba85f395a740c2319511be6e5a6be31ed0666e72",
        "story": "eae69c5736e08c6d57dab958f0fc1ca473131c40a2b3761cd99b8649ebe71f4c",
        "outro": "81fbc36d6bea22ba2a13d826b70edc71b27f5f8b15676c78bbae0d7ffe1bf6f3",
    },
}
MUG_COSTS = {"intro": "21/50", "pour": "24/25", "hero": "21/50", "story": "14/25", "outro": "21/50"}

VARIETY_KEYS = {
    "v3-min": "22d0dae43da84f5c6724470e8d53c153779bff6e8415c9b673a069bc2abb54d3",
    "v3-cfg-default": "b726afd858f8f12dc0e67d841eebb78eb38defb5d959e0b154ff91a056a9645a",
    "v3-cfg-int": "6e451351c9b10ab6ce713e67e4243417f875a3d199e8adb7cacbd9d718e84479",
    "v3-sound": "9a745a7c823b8f53bf5a3c4d913bcec58814c851812d38e202505d9a74c3a36f",
    "v3-sound-false": "22d0dae43da84f5c6724470e8d53c153779bff6e8415c9b673a069bc2abb54d3",
    "v3-end": "2f8b0a75af86a136656bd99856d739a23abf965435579ea1173d0259de0a845b",
    "v3-multi": "fb67eb59c260fbf6ef1fded6906ab59a9b069333c846113cc3c4f346edc82220",
    "v3-elements": "b45e47bdc670ec4b6e52cb2eacb74d1cd22d276d310468195e052ab25fb0f4b5",
    "v3pro-min": "1ff9c9b90d86641d9f9192ffb3733c637c11d2009ac4a8c824420f0306fdad90",
    "v3pro-kwai": "a8e6acb30c9a98b7cb8da338a35f989bbd47e3eb2f41c76e9b7e1ffe2b41f429",
    "o3-min": "2efbfb405018aa865a6acc4fbe1a00a9a143135c7921dc9f44af9bca3d365668",
    "o3-sound-end": "b1cda712b24dbd94e818ed50063318f966a0bd67092f45d5987dd1e38facfdb4",
    "o1-min": "9f34b083cbee4a174c9fcd3375a7fad9bd05062ab19b0706756fb7d6df5a150c",
    "o1-end": "53bc73944c30eba3da6389601130bf3f0f98aa2632ef50bb4976fba63c3871bb",
    "o1-ten": "41aee597bf2d9166b75f31e8e731cf9965ab97a18b304b3157dfe1b8386d261b",
    "ref-min": "10692360f08bcec30ad288172584d197110670c3604c8c801e3a78b7872447a1",
    "ref-aspect": "47589e0b0a0a3369022bc41aa143e2c0b6ef8df555110b184ba450d406c0a7b8",
    "ref-aspect-default": "10692360f08bcec30ad288172584d197110670c3604c8c801e3a78b7872447a1",
    "ref-video": "6a98cfb829da1f6d72d2af0e8a46bb563eba8c7a54fa459b1256afb8a7bb2919",
    "ref-video-keep-true": "6a98cfb829da1f6d72d2af0e8a46bb563eba8c7a54fa459b1256afb8a7bb2919",
    "ref-video-keep-false": "ee3708aefb84124ff4d591cd3ee8c44d0eed95f81ee49a95764036cd72d55d46",
    "ref-keep-no-video": "10692360f08bcec30ad288172584d197110670c3604c8c801e3a78b7872447a1",
}
VARIETY_COSTS = {
    "v3-min": "21/50", "v3-cfg-default": "21/50", "v3-cfg-int": "21/50", "v3-sound": "63/50",
    "v3-sound-false": "21/50", "v3-end": "63/250", "v3-multi": "63/125", "v3-elements": "21/50",
    "v3pro-min": "14/25", "v3pro-kwai": "42/25", "o3-min": "9/10", "o3-sound-end": "42/25",
    "o1-min": "21/50", "o1-end": "147/250", "o1-ten": "21/25", "ref-min": "21/50", "ref-aspect": "21/50",
    "ref-aspect-default": "21/50", "ref-video": "63/100", "ref-video-keep-true": "63/100",
    "ref-video-keep-false": "63/100", "ref-keep-no-video": "21/50",
}  # fmt: skip


@pytest.mark.parametrize("provider", ["local", "wavespeed", "fal"])
def test_example_project_keys_are_pinned(provider: str) -> None:
    project = load_project(MUG)
    assert {s.id: shot_key(provider, s) for s in project.shots} == MUG_KEYS[provider]
    assert {s.id: cost_of(s, project.prices, "wavespeed") for s in project.shots} == {
        k: Fraction(v) for k, v in MUG_COSTS.items()
    }
    # One shot, one key per provider: two providers' clips are different clips.
    assert len({shot_key(p, project.shots[0]) for p in MUG_KEYS}) == len(MUG_KEYS)


def test_keys_and_prices_of_every_builtin_model_are_pinned() -> None:
    project = load_project(VARIETY)
    assert {s.id: shot_key("wavespeed", s) for s in project.shots} == VARIETY_KEYS
    assert {s.id: cost_of(s, project.prices, "wavespeed") for s in project.shots} == {
        k: Fraction(v) for k, v in VARIETY_COSTS.items()
    }
