"""The 124 VIPSeg / VSPW classes: (name, isthing, colour), listed in id order 0..123.

Ids are the COCO-panoptic ``category_id`` of ``panoVIPSeg_categories.json`` (= raw panomask class − 1 = VSPW
label after its −1 shift). 58 things, 66 stuff. Names and colours as in the VIPSeg release (the table
DVIS++ ``vps.py`` and VIPSeg ``create_panoptic_video_labels.py`` hard-code). Note ``Playground_slide``
(stuff) and ``car`` (thing) share the colour (140, 140, 140): IdGenerator always perturbs car.
"""

from __future__ import annotations

from gvseg.structures import Category

_TABLE: list[tuple[str, int, tuple[int, int, int]]] = [
    ("wall", 0, (120, 120, 120)), ("ceiling", 0, (180, 120, 120)), ("door", 1, (6, 230, 230)),
    ("stair", 0, (80, 50, 50)), ("ladder", 1, (4, 200, 3)), ("escalator", 0, (120, 120, 80)),
    ("Playground_slide", 0, (140, 140, 140)), ("handrail_or_fence", 0, (204, 5, 255)),
    ("window", 1, (230, 230, 230)), ("rail", 0, (4, 250, 7)), ("goal", 1, (224, 5, 255)),
    ("pillar", 0, (235, 255, 7)), ("pole", 0, (150, 5, 61)), ("floor", 0, (120, 120, 70)),
    ("ground", 0, (8, 255, 51)), ("grass", 0, (255, 6, 82)), ("sand", 0, (143, 255, 140)),
    ("athletic_field", 0, (204, 255, 4)), ("road", 0, (255, 51, 7)), ("path", 0, (204, 70, 3)),
    ("crosswalk", 0, (0, 102, 200)), ("building", 0, (61, 230, 250)), ("house", 0, (255, 6, 51)),
    ("bridge", 0, (11, 102, 255)), ("tower", 0, (255, 7, 71)), ("windmill", 0, (255, 9, 224)),
    ("well_or_well_lid", 0, (9, 7, 230)), ("other_construction", 0, (220, 220, 220)),
    ("sky", 0, (255, 9, 92)), ("mountain", 0, (112, 9, 255)), ("stone", 0, (8, 255, 214)),
    ("wood", 0, (7, 255, 224)), ("ice", 0, (255, 184, 6)), ("snowfield", 0, (10, 255, 71)),
    ("grandstand", 0, (255, 41, 10)), ("sea", 0, (7, 255, 255)), ("river", 0, (224, 255, 8)),
    ("lake", 0, (102, 8, 255)), ("waterfall", 0, (255, 61, 6)), ("water", 0, (255, 194, 7)),
    ("billboard_or_Bulletin_Board", 0, (255, 122, 8)), ("sculpture", 1, (0, 255, 20)),
    ("pipeline", 0, (255, 8, 41)), ("flag", 1, (255, 5, 153)), ("parasol_or_umbrella", 1, (6, 51, 255)),
    ("cushion_or_carpet", 0, (235, 12, 255)), ("tent", 1, (160, 150, 20)), ("roadblock", 1, (0, 163, 255)),
    ("car", 1, (140, 140, 140)), ("bus", 1, (250, 10, 15)), ("truck", 1, (20, 255, 0)),
    ("bicycle", 1, (31, 255, 0)), ("motorcycle", 1, (255, 31, 0)), ("wheeled_machine", 0, (255, 224, 0)),
    ("ship_or_boat", 1, (153, 255, 0)), ("raft", 1, (0, 0, 255)), ("airplane", 1, (255, 71, 0)),
    ("tyre", 0, (0, 235, 255)), ("traffic_light", 0, (0, 173, 255)), ("lamp", 0, (31, 0, 255)),
    ("person", 1, (11, 200, 200)), ("cat", 1, (255, 82, 0)), ("dog", 1, (0, 255, 245)),
    ("horse", 1, (0, 61, 255)), ("cattle", 1, (0, 255, 112)), ("other_animal", 1, (0, 255, 133)),
    ("tree", 0, (255, 0, 0)), ("flower", 0, (255, 163, 0)), ("other_plant", 0, (255, 102, 0)),
    ("toy", 0, (194, 255, 0)), ("ball_net", 0, (0, 143, 255)), ("backboard", 0, (51, 255, 0)),
    ("skateboard", 1, (0, 82, 255)), ("bat", 0, (0, 255, 41)), ("ball", 1, (0, 255, 173)),
    ("cupboard_or_showcase_or_storage_rack", 0, (10, 0, 255)), ("box", 1, (173, 255, 0)),
    ("traveling_case_or_trolley_case", 1, (0, 255, 153)), ("basket", 1, (255, 92, 0)),
    ("bag_or_package", 1, (255, 0, 255)), ("trash_can", 0, (255, 0, 245)), ("cage", 0, (255, 0, 102)),
    ("plate", 1, (255, 173, 0)), ("tub_or_bowl_or_pot", 1, (255, 0, 20)), ("bottle_or_cup", 1, (255, 184, 184)),
    ("barrel", 1, (0, 31, 255)), ("fishbowl", 1, (0, 255, 61)), ("bed", 1, (0, 71, 255)),
    ("pillow", 1, (255, 0, 204)), ("table_or_desk", 1, (0, 255, 194)), ("chair_or_seat", 1, (0, 255, 82)),
    ("bench", 1, (0, 10, 255)), ("sofa", 1, (0, 112, 255)), ("shelf", 0, (51, 0, 255)),
    ("bathtub", 0, (0, 194, 255)), ("gun", 1, (0, 122, 255)), ("commode", 1, (0, 255, 163)),
    ("roaster", 1, (255, 153, 0)), ("other_machine", 0, (0, 255, 10)), ("refrigerator", 1, (255, 112, 0)),
    ("washing_machine", 1, (143, 255, 0)), ("Microwave_oven", 1, (82, 0, 255)), ("fan", 1, (163, 255, 0)),
    ("curtain", 0, (255, 235, 0)), ("textiles", 0, (8, 184, 170)), ("clothes", 0, (133, 0, 255)),
    ("painting_or_poster", 1, (0, 255, 92)), ("mirror", 1, (184, 0, 255)),
    ("flower_pot_or_vase", 1, (255, 0, 31)), ("clock", 1, (0, 184, 255)), ("book", 0, (0, 214, 255)),
    ("tool", 0, (255, 0, 112)), ("blackboard", 0, (92, 255, 0)), ("tissue", 0, (0, 224, 255)),
    ("screen_or_television", 1, (112, 224, 255)), ("computer", 1, (70, 184, 160)),
    ("printer", 1, (163, 0, 255)), ("Mobile_phone", 1, (153, 0, 255)), ("keyboard", 1, (71, 255, 0)),
    ("other_electronic_product", 0, (255, 0, 163)), ("fruit", 0, (255, 204, 0)), ("food", 0, (255, 0, 143)),
    ("instrument", 1, (0, 255, 235)), ("train", 1, (133, 255, 0)),
]

VIPSEG_CATEGORIES: list[Category] = [
    Category(id=i, name=name, isthing=bool(thing), color=color) for i, (name, thing, color) in enumerate(_TABLE)
]
assert len(VIPSEG_CATEGORIES) == 124 and sum(c.isthing for c in VIPSEG_CATEGORIES) == 58
