"""Data the feed fast path shares with feedparser, kept here as our own constants.

The fast path (:mod:`gateway.sources.feed_fast`) must name elements and repair text
exactly as feedparser does. These tables are feedparser's, as of the release pinned in
``pyproject.toml`` (6.0.x), copied rather than imported because feedparser keeps them
in private names (``_FeedParserMixin.namespaces``, its ``_start_*``/``_end_*``
handler methods, ``_cp1252``). feedparser is BSD-licensed (c) Kurt McKee and Mark
Pilgrim. ``tests/test_feed_fastpath.py`` checks that both paths agree on real feeds,
so a feedparser release that changes its behaviour fails there, not in production.
"""

from __future__ import annotations

#: Namespace URI -> feedparser's standard prefix ("" for RSS 0.9x/1.0 and Atom).
NAMESPACES: dict[str, str] = {
    '': '',
    'http://backend.userland.com/rss': '',
    'http://blogs.law.harvard.edu/tech/rss': '',
    'http://purl.org/rss/1.0/': '',
    'http://my.netscape.com/rdf/simple/0.9/': '',
    'http://example.com/newformat#': '',
    'http://example.com/necho': '',
    'http://purl.org/echo/': '',
    'uri/of/echo/namespace#': '',
    'http://purl.org/pie/': '',
    'http://purl.org/atom/ns#': '',
    'http://www.w3.org/2005/Atom': '',
    'http://purl.org/rss/1.0/modules/rss091#': '',
    'http://webns.net/mvcb/': 'admin',
    'http://purl.org/rss/1.0/modules/aggregation/': 'ag',
    'http://purl.org/rss/1.0/modules/annotate/': 'annotate',
    'http://media.tangent.org/rss/1.0/': 'audio',
    'http://backend.userland.com/blogChannelModule': 'blogChannel',
    'http://creativecommons.org/ns#license': 'cc',
    'http://web.resource.org/cc/': 'cc',
    'http://cyber.law.harvard.edu/rss/creativeCommonsRssModule.html': 'creativeCommons',
    'http://backend.userland.com/creativeCommonsRssModule': 'creativeCommons',
    'http://purl.org/rss/1.0/modules/company': 'co',
    'http://purl.org/rss/1.0/modules/content/': 'content',
    'http://my.theinfo.org/changed/1.0/rss/': 'cp',
    'http://purl.org/dc/elements/1.1/': 'dc',
    'http://purl.org/dc/terms/': 'dcterms',
    'http://purl.org/rss/1.0/modules/email/': 'email',
    'http://purl.org/rss/1.0/modules/event/': 'ev',
    'http://rssnamespace.org/feedburner/ext/1.0': 'feedburner',
    'http://freshmeat.net/rss/fm/': 'fm',
    'http://xmlns.com/foaf/0.1/': 'foaf',
    'http://www.w3.org/2003/01/geo/wgs84_pos#': 'geo',
    'http://www.georss.org/georss': 'georss',
    'http://www.opengis.net/gml': 'gml',
    'http://postneo.com/icbm/': 'icbm',
    'http://purl.org/rss/1.0/modules/image/': 'image',
    'http://www.itunes.com/DTDs/PodCast-1.0.dtd': 'itunes',
    'http://example.com/DTDs/PodCast-1.0.dtd': 'itunes',
    'http://purl.org/rss/1.0/modules/link/': 'l',
    'http://search.yahoo.com/mrss': 'media',
    'http://search.yahoo.com/mrss/': 'media',
    'http://madskills.com/public/xml/rss/module/pingback/': 'pingback',
    'http://prismstandard.org/namespaces/1.2/basic/': 'prism',
    'http://www.w3.org/1999/02/22-rdf-syntax-ns#': 'rdf',
    'http://www.w3.org/2000/01/rdf-schema#': 'rdfs',
    'http://purl.org/rss/1.0/modules/reference/': 'ref',
    'http://purl.org/rss/1.0/modules/richequiv/': 'reqv',
    'http://purl.org/rss/1.0/modules/search/': 'search',
    'http://purl.org/rss/1.0/modules/slash/': 'slash',
    'http://schemas.xmlsoap.org/soap/envelope/': 'soap',
    'http://purl.org/rss/1.0/modules/servicestatus/': 'ss',
    'http://hacks.benhammersley.com/rss/streaming/': 'str',
    'http://purl.org/rss/1.0/modules/subscription/': 'sub',
    'http://purl.org/rss/1.0/modules/syndication/': 'sy',
    'http://schemas.pocketsoap.com/rss/myDescModule/': 'szf',
    'http://purl.org/rss/1.0/modules/taxonomy/': 'taxo',
    'http://purl.org/rss/1.0/modules/threading/': 'thr',
    'http://purl.org/rss/1.0/modules/textinput/': 'ti',
    'http://madskills.com/public/xml/rss/module/trackback/': 'trackback',
    'http://wellformedweb.org/commentAPI/': 'wfw',
    'http://purl.org/rss/1.0/modules/wiki/': 'wiki',
    'http://www.w3.org/1999/xhtml': 'xhtml',
    'http://www.w3.org/1999/xlink': 'xlink',
    'http://www.w3.org/XML/1998/namespace': 'xml',
    'http://podlove.org/simple-chapters': 'psc',
}

#: Element names (feedparser's ``prefix_local`` spelling) that feedparser has a handler for.
HANDLED_ELEMENTS: frozenset[str] = frozenset(
    {
        'abstract', 'author', 'body', 'category', 'cc_license', 'channel', 'cloud', 'content',
        'content_encoded', 'contributor', 'copyright', 'created', 'creativeCommons_license',
        'creativecommons_license', 'dc_author', 'dc_contributor', 'dc_creator', 'dc_date', 'dc_description',
        'dc_language', 'dc_publisher', 'dc_rights', 'dc_subject', 'dc_title', 'dcterms_created',
        'dcterms_issued', 'dcterms_modified', 'dcterms_valid', 'description', 'email', 'enclosure', 'entry',
        'expirationdate', 'feed', 'feedburner_browserfriendly', 'fullitem', 'generator', 'geom', 'georss_box',
        'georss_line', 'georss_point', 'georss_polygon', 'georss_where', 'georssgeom', 'gml_exterior',
        'gml_linearring', 'gml_linestring', 'gml_point', 'gml_polygon', 'gml_pos', 'gml_poslist', 'guid',
        'height', 'homepage', 'id', 'image', 'info', 'issued', 'item', 'itunes_author', 'itunes_block',
        'itunes_category', 'itunes_email', 'itunes_explicit', 'itunes_image', 'itunes_keywords',
        'itunes_link', 'itunes_name', 'itunes_owner', 'itunes_subtitle', 'itunes_summary', 'keywords',
        'language', 'lastbuilddate', 'link', 'managingeditor', 'media_category', 'media_content',
        'media_credit', 'media_description', 'media_group', 'media_keywords', 'media_license', 'media_player',
        'media_rating', 'media_restriction', 'media_thumbnail', 'media_title', 'modified', 'name',
        'newlocation', 'psc_chapter', 'psc_chapters', 'pubdate', 'published', 'rights', 'rss', 'source',
        'subtitle', 'summary', 'tagline', 'tags', 'textInput', 'textinput', 'title', 'updated', 'uri', 'url',
        'webmaster', 'where', 'width', 'xhtml_body',
    }
)  # fmt: skip

#: C1 control characters feedparser reads as the cp1252 characters they encode there.
CP1252_REPAIR: dict[int, str] = {
    i: bytes([i]).decode("cp1252") for i in range(0x80, 0xA0) if i not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}
