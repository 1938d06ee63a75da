"""The generic vocabulary random negative class names are drawn from (the OWL recipe samples
about 50 per image, so that the class head keeps telling the trained classes from everything
else). Common object, animal, vehicle and scene-part names; the trained and probe classes are
left out of the draw."""

from __future__ import annotations

GENERIC_NAMES = tuple(n.replace("-", " ") for n in """
person man woman child baby face hand hat helmet glasses shoe boot bag backpack handbag suitcase umbrella
tie shirt jacket dress coat glove scarf watch ring necklace wallet phone laptop keyboard mouse monitor
television remote camera speaker headphones microphone book notebook pen pencil paper envelope box
bottle cup mug glass plate bowl fork knife spoon chopsticks pot pan kettle toaster microwave oven
refrigerator sink faucet toilet bathtub towel mirror lamp candle clock vase plant flower tree bush
grass rock stone sand snow water wave cloud sky sun moon mountain hill river lake road street sidewalk
bridge building house window door wall fence gate roof chimney stairs chair table desk bench sofa bed
pillow blanket curtain carpet shelf cabinet drawer basket bucket barrel crate bin ladder rope chain
car truck bus van motorcycle bicycle scooter train tram boat ship canoe airplane helicopter rocket
tire wheel traffic-light stop-sign street-sign parking-meter fire-hydrant pole cone barrier flag
banner poster sign logo dog cat horse cow sheep pig goat chicken duck goose bird pigeon parrot owl
eagle fish shark whale dolphin turtle frog snake lizard insect butterfly bee spider elephant giraffe
zebra lion tiger bear monkey deer rabbit squirrel kangaroo camel apple banana orange
lemon grape strawberry cherry pear peach watermelon pineapple tomato potato carrot onion broccoli
lettuce pepper corn mushroom bread cake cookie donut pizza sandwich hamburger hot-dog egg cheese
ball kite skateboard surfboard skis snowboard tennis-racket baseball-bat frisbee toy doll teddy-bear
guitar piano violin drum trumpet scissors hammer screwdriver wrench saw drill shovel broom brush
comb toothbrush soap key lock coin medal trophy statue painting frame tent
""".split())

__all__ = ["GENERIC_NAMES"]
